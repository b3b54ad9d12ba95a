//! One request and its parsed answer: an envelope posted over the HTTP transport with the right
//! bound, and a Receive that survives a lost connection where the server keeps responses
//! (MS-WSMV 3.1.4.1.39, robust connections).

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use tokio::time::Instant;
use uuid::Uuid;

use super::error::WsmanFailure;
use crate::{
    transport::wsman::WsmanTransport,
    wsman::{
        Envelope, OperationId, ReceiveResponse, Response, WsmanClient, WsmanError, parse_receive_response,
    },
};

/// How long after the first failure a Receive is sent again over new connections, at most.
const RETRANSMIT_FOR: Duration = Duration::from_secs(30);
/// The pause between retransmissions: a connection that broke now is unlikely to be back in 0 ms.
const RETRANSMIT_PAUSE: Duration = Duration::from_millis(500);

/// The SOAP client and the HTTP transport of one session, cheap to clone into the tasks that
/// carry each request.
#[derive(Clone, Debug)]
pub(super) struct Exchange {
    pub client: WsmanClient,
    pub transport: WsmanTransport,
    /// The bound of a request that is not a long poll (the session's operation timeout).
    pub operation_timeout: Duration,
    /// The server echoed a `wsmv:OperationID`: it keeps responses for retransmission.
    robust: Arc<AtomicBool>,
}

impl Exchange {
    pub fn new(client: WsmanClient, transport: WsmanTransport, operation_timeout: Duration) -> Self {
        Exchange {
            client,
            transport,
            operation_timeout,
            robust: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Whether the server has shown robust connection support.
    pub fn robust(&self) -> bool {
        self.robust.load(Ordering::Relaxed)
    }

    /// Posts a request that the server answers at once; the body of the answer (a fault is a body
    /// too: the parser turns it into [`WsmanError::Fault`]).
    pub async fn post(&self, envelope: &Envelope) -> Result<Bytes, WsmanFailure> {
        self.post_within(envelope, self.operation_timeout).await
    }

    async fn post_within(&self, envelope: &Envelope, bound: Duration) -> Result<Bytes, WsmanFailure> {
        let response = self
            .transport
            .post(Bytes::from(envelope.to_bytes()), bound)
            .await?;
        Ok(response.body)
    }

    /// Posts and parses.
    pub async fn call<T>(
        &self,
        envelope: &Envelope,
        parse: impl FnOnce(&[u8]) -> Result<Response<T>, WsmanError>,
    ) -> Result<Response<T>, WsmanFailure> {
        let body = self.post(envelope).await?;
        Ok(parse(&body)?)
    }

    /// One Receive of the pool (`command` `None`) or of a pipeline: a long poll that the server
    /// ends after the envelope's OperationTimeout at the latest (a `TimedOut` fault: ask again).
    ///
    /// Sent as a robust operation (a fresh `wsmv:OperationID`). When the connection breaks or the
    /// answer does not come, and the server has shown it keeps responses, the same request goes
    /// again as a retransmission: the server answers with the response it kept (the output it took
    /// for the lost one), not with new output, so nothing handed out is lost or doubled.
    ///
    /// `operation` is the OperationID to use; with `again`, the first request is already a
    /// retransmission: a new process asking for the response of a Receive an earlier one sent
    /// (the server answers it from its cache if it still has it, else runs it as a new Receive).
    pub async fn receive(
        &self,
        shell_id: Uuid,
        command: Option<Uuid>,
        sequence: u64,
        operation: Uuid,
        again: bool,
    ) -> Result<Response<ReceiveResponse>, WsmanFailure> {
        let mut envelope = self.client.receive_numbered(shell_id, command, sequence);
        let operation = OperationId::new(operation);
        envelope.operation_id = Some(if again { operation.retransmit() } else { operation });
        let bound = self.client.operation_timeout + self.operation_timeout;
        let mut given_up_at: Option<Instant> = None;
        loop {
            let result = match self.post_within(&envelope, bound).await {
                Ok(body) => parse_receive_response(&body).map_err(WsmanFailure::from),
                Err(error) => Err(error),
            };
            match result {
                Ok(response) => {
                    if response.header.operation_id.is_some() {
                        self.robust.store(true, Ordering::Relaxed);
                    }
                    return Ok(response);
                }
                Err(error) if error.is_connection_loss() && self.robust() => {
                    let until = *given_up_at.get_or_insert_with(|| Instant::now() + RETRANSMIT_FOR);
                    if Instant::now() >= until {
                        return Err(error);
                    }
                    tracing::debug!(
                        shell = %shell_id, ?command, reason = error.reason(), %error,
                        "Receive lost; retransmitting (robust connection)"
                    );
                    tokio::time::sleep(RETRANSMIT_PAUSE).await;
                    if let Some(again) = envelope.retransmission() {
                        envelope = again;
                    }
                }
                Err(error) => return Err(error),
            }
        }
    }
}
