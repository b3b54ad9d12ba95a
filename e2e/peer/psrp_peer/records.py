"""ScriptError (pure Python, from the interpreter) -> psrpcore ErrorRecord, as PowerShell would fill it.

MS-PSRP 2.2.2.20 ERROR_RECORD and the ExceptionAsErrorRecord of 2.2.2.21 PIPELINE_STATE: a client reads Exception (message and .NET type names), FullyQualifiedErrorId
and CategoryInfo; the operator surfaces exactly these, so the peer fills them like a real host does.
"""

from __future__ import annotations

from psrpcore.types import ErrorCategory, ErrorCategoryInfo, ErrorRecord, NETException

from psrp_peer.script.errors import ScriptError


def net_exception(error: ScriptError) -> NETException:
    exception = NETException(Message=error.message, HResult=-2146233087)  # COR_E_SYSTEM, as RuntimeException
    # CLIXML carries the .NET type chain in <TN>; clients match on it (e.g. CommandNotFoundException).
    exception.PSObject.type_names = [*error.exception_types, "System.Exception", "System.Object"]
    return exception


def category_info(error: ScriptError) -> ErrorCategoryInfo:
    try:
        category = ErrorCategory[error.category]
    except KeyError:
        category = ErrorCategory.NotSpecified
    return ErrorCategoryInfo(
        Category=category,
        Reason=error.reason,
        TargetName=error.target_name,
        TargetType=error.target_type,
    )


def error_record(error: ScriptError) -> ErrorRecord:
    return ErrorRecord(
        Exception=net_exception(error),
        CategoryInfo=category_info(error),
        TargetObject=error.target,
        FullyQualifiedErrorId=error.error_id,
    )
