//! Enumerate and Pull of shells and of a shell's commands (MS-WSMV 3.1.4.8.2, 3.1.4.9.2): what
//! `Get-PSSession -ComputerName` lists, and how a disconnected session made elsewhere is found.

use std::time::Duration;

use uuid::Uuid;

use super::duration;
use super::envelope::BufferMode;
use super::error::WsmanError;
use super::namespaces::{ENUMERATION, SHELL, WSMAN, action};
use super::response::{Response, parse_uuid};
use super::xml::Element;

/// `rsp:State` of a shell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShellState {
    Connected,
    Disconnected,
    /// Any other value, kept.
    Other(String),
}

/// A shell as Create, Get and Enumerate describe it (MS-WSMV 2.2.4.37, 3.1.4.2.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShellInfo {
    pub shell_id: Uuid,
    pub name: Option<String>,
    pub resource_uri: Option<String>,
    pub owner: Option<String>,
    pub client_ip: Option<String>,
    pub process_id: Option<u32>,
    pub state: Option<ShellState>,
    pub idle_timeout: Option<Duration>,
    pub max_idle_timeout: Option<Duration>,
    pub buffer_mode: Option<BufferMode>,
    pub shell_run_time: Option<Duration>,
    pub shell_inactivity: Option<Duration>,
    pub input_streams: Option<String>,
    pub output_streams: Option<String>,
    pub locale: Option<String>,
    pub data_locale: Option<String>,
    pub compression_mode: Option<String>,
    pub profile_loaded: Option<String>,
    pub encoding: Option<String>,
    pub memory_used: Option<String>,
    pub child_processes: Option<u32>,
}

fn text(e: &Element, name: &str) -> Option<String> {
    e.child_text(SHELL, name).map(str::to_string)
}

fn duration_of(e: &Element, name: &'static str) -> Result<Option<Duration>, WsmanError> {
    match e.child_text(SHELL, name) {
        Some(t) => duration::parse(t)
            .map(Some)
            .ok_or_else(|| WsmanError::invalid(name, t)),
        None => Ok(None),
    }
}

fn number_of(e: &Element, name: &'static str) -> Result<Option<u32>, WsmanError> {
    match e.child_text(SHELL, name) {
        Some(t) => t.parse().map(Some).map_err(|_| WsmanError::invalid(name, t)),
        None => Ok(None),
    }
}

impl ShellInfo {
    /// A shell known only by its id (a CreateResponse with `wst:ResourceCreated` alone).
    pub fn with_id(shell_id: Uuid) -> ShellInfo {
        ShellInfo {
            shell_id,
            name: None,
            resource_uri: None,
            owner: None,
            client_ip: None,
            process_id: None,
            state: None,
            idle_timeout: None,
            max_idle_timeout: None,
            buffer_mode: None,
            shell_run_time: None,
            shell_inactivity: None,
            input_streams: None,
            output_streams: None,
            locale: None,
            data_locale: None,
            compression_mode: None,
            profile_loaded: None,
            encoding: None,
            memory_used: None,
            child_processes: None,
        }
    }

    /// Whether the shell is a PowerShell runspace pool (its resource URI is a session
    /// configuration's), as opposed to a WinRS `cmd` shell.
    pub fn is_powershell(&self) -> bool {
        self.resource_uri
            .as_deref()
            .is_some_and(|uri| uri.starts_with(super::namespaces::resource::POWERSHELL_PREFIX))
    }

    /// Reads an `rsp:Shell` element.
    pub(crate) fn from_element(shell: &Element) -> Result<ShellInfo, WsmanError> {
        let id = shell
            .child_text(SHELL, "ShellId")
            .or_else(|| shell.attr("ShellId"))
            .ok_or(WsmanError::Missing("rsp:ShellId"))?;
        let shell_id = parse_uuid(id).ok_or_else(|| WsmanError::invalid("rsp:ShellId", id))?;
        let buffer_mode = match shell.child_text(SHELL, "BufferMode") {
            Some(m) => Some(BufferMode::parse(m).ok_or_else(|| WsmanError::invalid("rsp:BufferMode", m))?),
            None => None,
        };
        let state = shell.child_text(SHELL, "State").map(|s| match s {
            "Connected" => ShellState::Connected,
            "Disconnected" => ShellState::Disconnected,
            other => ShellState::Other(other.to_string()),
        });
        Ok(ShellInfo {
            shell_id,
            name: text(shell, "Name").or_else(|| shell.attr("Name").map(str::to_string)),
            resource_uri: text(shell, "ResourceUri"),
            owner: text(shell, "Owner"),
            client_ip: text(shell, "ClientIP"),
            process_id: number_of(shell, "ProcessId")?,
            state,
            idle_timeout: duration_of(shell, "IdleTimeOut")?,
            max_idle_timeout: duration_of(shell, "MaxIdleTimeOut")?,
            buffer_mode,
            shell_run_time: duration_of(shell, "ShellRunTime")?,
            shell_inactivity: duration_of(shell, "ShellInactivity")?,
            input_streams: text(shell, "InputStreams"),
            output_streams: text(shell, "OutputStreams"),
            locale: text(shell, "Locale"),
            data_locale: text(shell, "DataLocale"),
            compression_mode: text(shell, "CompressionMode"),
            profile_loaded: text(shell, "ProfileLoaded"),
            encoding: text(shell, "Encoding"),
            memory_used: text(shell, "MemoryUsed"),
            child_processes: number_of(shell, "ChildProcesses")?,
        })
    }
}

/// A command of a shell, as an Enumerate of [`super::namespaces::resource::COMMANDS`] lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandInfo {
    pub command_id: Uuid,
    pub command_line: Option<String>,
    /// `rsp:CommandState`, e.g. `Running`.
    pub state: Option<String>,
}

/// A page of an enumeration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnumerationPage<T> {
    pub items: Vec<T>,
    /// `wsen:EnumerationContext`: what the next Pull names; `None` or empty at the end.
    pub context: Option<String>,
    /// `wsman:EndOfSequence` / `wsen:EndOfSequence`: no more pages.
    pub end_of_sequence: bool,
}

impl<T> EnumerationPage<T> {
    /// Whether a Pull is needed for more items.
    pub fn needs_pull(&self) -> bool {
        !self.end_of_sequence && self.context.as_deref().is_some_and(|c| !c.is_empty())
    }
}

fn page<T>(
    bytes: &[u8],
    item: &'static str,
    parse: impl Fn(&Element) -> Result<T, WsmanError>,
) -> Result<Response<EnumerationPage<T>>, WsmanError> {
    let (header, body) = super::response::read_envelope(bytes)?;
    let (container, expected) = if let Some(c) = body.child(ENUMERATION, "EnumerateResponse") {
        (c, action::ENUMERATE_RESPONSE)
    } else if let Some(c) = body.child(ENUMERATION, "PullResponse") {
        (c, action::PULL_RESPONSE)
    } else {
        return Err(WsmanError::Missing("wsen:EnumerateResponse or wsen:PullResponse"));
    };
    if !header.action.is_empty() && header.action != expected {
        return Err(WsmanError::UnexpectedAction {
            expected,
            got: header.action,
        });
    }
    let items_el = container
        .child(WSMAN, "Items")
        .or_else(|| container.child(ENUMERATION, "Items"));
    let mut items = Vec::new();
    if let Some(list) = items_el {
        for e in list.children(SHELL, item) {
            items.push(parse(e)?);
        }
    }
    let context = container
        .child_text(ENUMERATION, "EnumerationContext")
        .map(str::to_string);
    let end_of_sequence = container.child(WSMAN, "EndOfSequence").is_some()
        || container.child(ENUMERATION, "EndOfSequence").is_some();
    Ok(Response {
        header,
        body: EnumerationPage {
            items,
            context,
            end_of_sequence,
        },
    })
}

/// Parses an EnumerateResponse or PullResponse of shells.
pub fn parse_shells(bytes: &[u8]) -> Result<Response<EnumerationPage<ShellInfo>>, WsmanError> {
    page(bytes, "Shell", ShellInfo::from_element)
}

/// Parses an EnumerateResponse or PullResponse of a shell's commands.
pub fn parse_commands(bytes: &[u8]) -> Result<Response<EnumerationPage<CommandInfo>>, WsmanError> {
    page(bytes, "Command", |e| {
        let id = e
            .child_text(SHELL, "CommandId")
            .ok_or(WsmanError::Missing("rsp:CommandId"))?;
        Ok(CommandInfo {
            command_id: parse_uuid(id).ok_or_else(|| WsmanError::invalid("rsp:CommandId", id))?,
            command_line: e.child_text(SHELL, "CommandLine").map(str::to_string),
            state: e.child_text(SHELL, "CommandState").map(str::to_string),
        })
    })
}
