//! The PowerShell states of a runspace pool and a pipeline, with the transitions the client accepts.
//!
//! The values are those PowerShell sends in RUNSPACEPOOL_STATE and PIPELINE_STATE (MS-PSRP 2.2.3.4,
//! 2.2.3.5; the .NET enums, which psrpcore follows too). A transition the table does not allow is a
//! protocol error, never a panic: the server is remote data.

use std::fmt;

/// `System.Management.Automation.Runspaces.RunspacePoolState`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RunspacePoolState {
    BeforeOpen,
    Opening,
    Opened,
    Closed,
    Closing,
    Broken,
    /// The client sent SESSION_CAPABILITY and waits for the server's.
    NegotiationSent,
    NegotiationSucceeded,
    Connecting,
    Disconnected,
}

impl RunspacePoolState {
    /// The state for a wire value.
    pub fn from_wire(value: i64) -> Option<Self> {
        Some(match value {
            0 => Self::BeforeOpen,
            1 => Self::Opening,
            2 => Self::Opened,
            3 => Self::Closed,
            4 => Self::Closing,
            5 => Self::Broken,
            6 => Self::NegotiationSent,
            7 => Self::NegotiationSucceeded,
            8 => Self::Connecting,
            9 => Self::Disconnected,
            _ => return None,
        })
    }

    pub fn wire_value(self) -> i32 {
        match self {
            Self::BeforeOpen => 0,
            Self::Opening => 1,
            Self::Opened => 2,
            Self::Closed => 3,
            Self::Closing => 4,
            Self::Broken => 5,
            Self::NegotiationSent => 6,
            Self::NegotiationSucceeded => 7,
            Self::Connecting => 8,
            Self::Disconnected => 9,
        }
    }

    /// Closed and Broken are final: a new pool is needed to go on.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Closed | Self::Broken)
    }

    /// Whether a pool may move from `self` to `next` on a message from the server.
    pub fn can_become(self, next: Self) -> bool {
        use RunspacePoolState::*;
        if self == next {
            return true;
        }
        match self {
            Closed | Broken => false,
            // The server can fail or close a pool at any time before it is final.
            _ if matches!(next, Broken | Closed) => true,
            BeforeOpen => matches!(next, NegotiationSent | Opening | Connecting),
            NegotiationSent => matches!(next, NegotiationSucceeded | Opening | Opened),
            NegotiationSucceeded => matches!(next, Opening | Opened),
            Opening | Connecting => matches!(next, Opened),
            Opened => matches!(next, Closing | Disconnected),
            Closing => false,
            Disconnected => matches!(next, Connecting | Opened),
        }
    }
}

impl fmt::Display for RunspacePoolState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// `System.Management.Automation.PSInvocationState`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PipelineState {
    NotStarted,
    Running,
    Stopping,
    Stopped,
    Completed,
    Failed,
    Disconnected,
}

impl PipelineState {
    pub fn from_wire(value: i64) -> Option<Self> {
        Some(match value {
            0 => Self::NotStarted,
            1 => Self::Running,
            2 => Self::Stopping,
            3 => Self::Stopped,
            4 => Self::Completed,
            5 => Self::Failed,
            6 => Self::Disconnected,
            _ => return None,
        })
    }

    pub fn wire_value(self) -> i32 {
        match self {
            Self::NotStarted => 0,
            Self::Running => 1,
            Self::Stopping => 2,
            Self::Stopped => 3,
            Self::Completed => 4,
            Self::Failed => 5,
            Self::Disconnected => 6,
        }
    }

    /// Stopped, Completed and Failed end a pipeline; nothing more arrives for it.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Stopped | Self::Completed | Self::Failed)
    }

    /// Whether a pipeline may move from `self` to `next` on a message from the server.
    pub fn can_become(self, next: Self) -> bool {
        use PipelineState::*;
        if self == next {
            return !self.is_final();
        }
        match self {
            Stopped | Completed | Failed => false,
            NotStarted => matches!(next, Running | Stopping | Stopped | Completed | Failed),
            Running => matches!(next, Stopping | Stopped | Completed | Failed | Disconnected),
            Stopping => matches!(next, Stopped | Completed | Failed),
            Disconnected => matches!(next, Running | Stopping | Stopped | Completed | Failed),
        }
    }
}

impl fmt::Display for PipelineState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// `System.Management.Automation.Runspaces.RunspaceAvailability`, as the operator reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Availability {
    /// Not usable: not open, or broken.
    None,
    /// Open, with no pipeline running.
    Available,
    /// Open, a pipeline runs.
    Busy,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_values_round_trip() {
        for value in 0..10 {
            let state = RunspacePoolState::from_wire(value).expect("known");
            assert_eq!(i64::from(state.wire_value()), value);
        }
        assert_eq!(RunspacePoolState::from_wire(10), None);
        for value in 0..7 {
            let state = PipelineState::from_wire(value).expect("known");
            assert_eq!(i64::from(state.wire_value()), value);
        }
        assert_eq!(PipelineState::from_wire(-1), None);
    }

    #[test]
    fn final_states_stay_final() {
        use PipelineState::*;
        for last in [Stopped, Completed, Failed] {
            for next in [
                NotStarted,
                Running,
                Stopping,
                Stopped,
                Completed,
                Failed,
                Disconnected,
            ] {
                assert!(!last.can_become(next), "{last} -> {next}");
            }
        }
        assert!(!RunspacePoolState::Closed.can_become(RunspacePoolState::Opened));
        assert!(!RunspacePoolState::Broken.can_become(RunspacePoolState::Opened));
    }

    #[test]
    fn the_usual_lives_are_allowed() {
        use RunspacePoolState as P;
        let open = [
            P::BeforeOpen,
            P::NegotiationSent,
            P::NegotiationSucceeded,
            P::Opening,
            P::Opened,
            P::Closing,
            P::Closed,
        ];
        assert!(open.windows(2).all(|w| w[0].can_become(w[1])), "{open:?}");
        assert!(P::Opened.can_become(P::Broken));
        use PipelineState as S;
        assert!(S::NotStarted.can_become(S::Running) && S::Running.can_become(S::Completed));
        assert!(S::Running.can_become(S::Stopping) && S::Stopping.can_become(S::Stopped));
        assert!(!S::Completed.can_become(S::Running));
    }
}
