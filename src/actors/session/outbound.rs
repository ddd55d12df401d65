//! The outbound direction of a session: commands the central system sends the station.
//!
//! OCPP-J allows one outstanding CALL per direction, so commands wait in order behind the one on
//! the wire; each has a deadline, past which it is not sent or its answer no longer awaited. A
//! CALLRESULT or CALLERROR settles the command with the same unique id; any other answer is
//! unsolicited and changes nothing. A plain struct: the session actor sends what it returns and
//! arms one timer per command on the wire; nothing here needs actix.

use crate::fleet::command::{CommandError, CommandResult};
use crate::metrics as m;
use crate::ocpp::actions::label as action_label;
use crate::ocpp::rpc::Call;
use serde_json::Value;
use std::collections::VecDeque;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// A command waiting for its turn.
pub struct Pending {
    pub action: String,
    pub payload: Value,
    /// After this instant the command is not sent, or its answer no longer awaited.
    pub deadline: Instant,
    pub responder: oneshot::Sender<CommandResult>,
}

/// A command to put on the wire now; its answer is due within `timeout`.
#[derive(Debug)]
pub struct Outgoing {
    pub call: Call,
    pub timeout: Duration,
}

/// An answer for no command on the wire (late, repeated or made up): ignored.
#[derive(Debug, PartialEq, Eq)]
pub struct Unsolicited;

struct InFlight {
    unique_id: String,
    action: String,
    sent_at: Instant,
    responder: oneshot::Sender<CommandResult>,
}

/// The session's commands: at most one on the wire, the others waiting in order, at most
/// `max_waiting` of them.
pub struct CommandQueue {
    waiting: VecDeque<Pending>,
    in_flight: Option<InFlight>,
    max_waiting: usize,
}

impl CommandQueue {
    pub fn new(max_waiting: usize) -> CommandQueue {
        CommandQueue { waiting: VecDeque::new(), in_flight: None, max_waiting }
    }

    /// Queues a command; answers what to send now, if it is its turn. A command over the bound is
    /// answered [`CommandError::QueueFull`] at once.
    pub fn push(&mut self, command: Pending, now: Instant) -> Option<Outgoing> {
        if self.waiting.len() >= self.max_waiting {
            crate::limits::hit(crate::limits::Limit::WaitingCommands);
            let _ = command.responder.send(Err(CommandError::QueueFull));
            return None;
        }
        self.waiting.push_back(command);
        self.next(now)
    }

    /// The action of the command on the wire, if `unique_id` is its id.
    pub fn outstanding(&self, unique_id: &str) -> Option<&str> {
        self.in_flight.as_ref().filter(|f| f.unique_id == unique_id).map(|f| f.action.as_str())
    }

    /// Commands waiting behind the one on the wire.
    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }

    /// The station's answer: settles the command on the wire when the id is its id, and answers
    /// the next command to send.
    pub fn answer(
        &mut self,
        unique_id: &str,
        result: CommandResult,
        now: Instant,
    ) -> Result<Option<Outgoing>, Unsolicited> {
        if self.outstanding(unique_id).is_none() {
            // Counted, and not worth a warning: it costs the station nothing to send many.
            metrics::counter!(m::UNSOLICITED_ANSWERS).increment(1);
            return Err(Unsolicited);
        }
        let Some(flight) = self.in_flight.take() else { return Err(Unsolicited) };
        metrics::gauge!(m::PENDING_COMMANDS).decrement(1.0);
        let action = action_label(&flight.action);
        metrics::histogram!(m::COMMAND_DURATION, "action" => action)
            .record(now.saturating_duration_since(flight.sent_at).as_secs_f64());
        let label = if result.is_ok() { "ok" } else { "error" };
        metrics::counter!(m::MESSAGES, "action" => action, "direction" => "out", "result" => label).increment(1);
        let _ = flight.responder.send(result);
        Ok(self.next(now))
    }

    /// The deadline of the command `unique_id` has come: if it is still on the wire it is answered
    /// [`CommandError::Timeout`], and the next one goes. Answers the action that timed out and
    /// the next command, or `None` when the command was settled meanwhile.
    pub fn expire(&mut self, unique_id: &str, now: Instant) -> Option<(String, Option<Outgoing>)> {
        self.outstanding(unique_id)?;
        let flight = self.in_flight.take()?;
        metrics::gauge!(m::PENDING_COMMANDS).decrement(1.0);
        let action = action_label(&flight.action);
        metrics::counter!(m::MESSAGES, "action" => action, "direction" => "out", "result" => "timeout").increment(1);
        let _ = flight.responder.send(Err(CommandError::Timeout));
        Some((flight.action, self.next(now)))
    }

    /// The session ended: the command on the wire is answered [`CommandError::Disconnected`], the
    /// waiting ones [`CommandError::NotSent`].
    pub fn close(&mut self) {
        if let Some(flight) = self.in_flight.take() {
            metrics::gauge!(m::PENDING_COMMANDS).decrement(1.0);
            let _ = flight.responder.send(Err(CommandError::Disconnected));
        }
        for command in self.waiting.drain(..) {
            let _ = command.responder.send(Err(CommandError::NotSent));
        }
    }

    /// The next command to send, if none is on the wire: waiting commands whose caller gave up are
    /// dropped, those past their deadline answered [`CommandError::Expired`].
    fn next(&mut self, now: Instant) -> Option<Outgoing> {
        if self.in_flight.is_some() {
            return None;
        }
        while let Some(command) = self.waiting.pop_front() {
            if command.responder.is_closed() {
                continue;
            }
            if command.deadline <= now {
                let _ = command.responder.send(Err(CommandError::Expired));
                continue;
            }
            let unique_id = uuid::Uuid::new_v4().simple().to_string();
            metrics::gauge!(m::PENDING_COMMANDS).increment(1.0);
            self.in_flight = Some(InFlight {
                unique_id: unique_id.clone(),
                action: command.action.clone(),
                sent_at: now,
                responder: command.responder,
            });
            let call = Call { unique_id, action: command.action, payload: command.payload };
            return Some(Outgoing { call, timeout: command.deadline - now });
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::command::CallErrorCode;
    use crate::ocpp::rpc::{ErrorCode, Frame};
    use crate::ocpp::Version;
    use serde_json::json;
    use tokio::sync::oneshot::error::TryRecvError;

    fn command(action: &str, deadline: Instant) -> (Pending, oneshot::Receiver<CommandResult>) {
        let (responder, answer) = oneshot::channel();
        (Pending { action: action.into(), payload: json!({"n": action}), deadline, responder }, answer)
    }

    fn soon(now: Instant) -> Instant {
        now + Duration::from_secs(30)
    }

    #[test]
    fn one_command_is_on_the_wire_and_the_others_wait_in_order() {
        let now = Instant::now();
        let mut q = CommandQueue::new(10);
        let (a, mut answer_a) = command("Reset", soon(now));
        let (b, mut answer_b) = command("UnlockConnector", soon(now));
        let (c, _answer_c) = command("ClearCache", soon(now));
        let first = q.push(a, now).expect("the first command goes at once");
        assert_eq!(first.call.action, "Reset");
        assert_eq!(first.timeout, Duration::from_secs(30));
        assert!(q.push(b, now).is_none(), "a second waits for the first's answer");
        assert!(q.push(c, now).is_none());
        assert_eq!(q.waiting(), 2);

        let second = q.answer(&first.call.unique_id, Ok(json!({"status": "Accepted"})), now).expect("its answer");
        assert_eq!(answer_a.try_recv(), Ok(Ok(json!({"status": "Accepted"}))));
        let second = second.expect("the next goes once the first is answered");
        assert_eq!(second.call.action, "UnlockConnector");
        assert_ne!(second.call.unique_id, first.call.unique_id);
        assert_eq!(answer_b.try_recv(), Err(TryRecvError::Empty));

        let third = q.answer(&second.call.unique_id, Ok(json!({})), now).expect("answered").expect("third goes");
        assert_eq!(third.call.action, "ClearCache");
        assert_eq!(q.waiting(), 0);
    }

    #[test]
    fn answers_to_no_command_on_the_wire_change_nothing() {
        let now = Instant::now();
        let mut q = CommandQueue::new(10);
        assert_eq!(q.answer("nobody", Ok(json!({})), now).err(), Some(Unsolicited));
        let (a, mut answer_a) = command("Reset", soon(now));
        let sent = q.push(a, now).expect("sent");
        assert_eq!(q.answer("made-up", Ok(json!({})), now).err(), Some(Unsolicited));
        assert_eq!(answer_a.try_recv(), Err(TryRecvError::Empty), "still waiting for its own answer");
        assert_eq!(q.outstanding(&sent.call.unique_id), Some("Reset"));
        assert!(q.answer(&sent.call.unique_id, Ok(json!({})), now).is_ok());
        // The same answer again, late: the command is settled already.
        assert_eq!(q.answer(&sent.call.unique_id, Ok(json!({})), now).err(), Some(Unsolicited));
    }

    #[test]
    fn a_command_on_the_wire_past_its_deadline_times_out_and_the_next_goes() {
        let now = Instant::now();
        let mut q = CommandQueue::new(10);
        let (a, mut answer_a) = command("Reset", now + Duration::from_secs(1));
        let (b, _answer_b) = command("ClearCache", soon(now));
        let sent = q.push(a, now).expect("sent");
        assert!(q.push(b, now).is_none());
        let later = now + Duration::from_secs(1);
        let (action, next) = q.expire(&sent.call.unique_id, later).expect("it was still on the wire");
        assert_eq!(action, "Reset");
        assert_eq!(answer_a.try_recv(), Ok(Err(CommandError::Timeout)));
        let next = next.expect("the next goes");
        assert_eq!(next.call.action, "ClearCache");
        assert_eq!(next.timeout, Duration::from_secs(29), "its own deadline still counts from when it was given");
        // The answer arriving after the timeout is late.
        assert_eq!(q.answer(&sent.call.unique_id, Ok(json!({})), later).err(), Some(Unsolicited));
        // A timer of a command answered in time finds nothing to expire.
        assert!(q.answer(&next.call.unique_id, Ok(json!({})), later).is_ok());
        assert!(q.expire(&next.call.unique_id, later).is_none());
    }

    #[test]
    fn waiting_commands_past_their_deadline_expire_unsent_and_abandoned_ones_are_dropped() {
        let now = Instant::now();
        let mut q = CommandQueue::new(10);
        let (a, _answer_a) = command("Reset", soon(now));
        let (b, mut answer_b) = command("UnlockConnector", now + Duration::from_secs(1));
        let (c, answer_c) = command("ChangeAvailability", soon(now));
        let (d, _answer_d) = command("ClearCache", soon(now));
        let sent = q.push(a, now).expect("sent");
        for c in [b, c, d] {
            assert!(q.push(c, now).is_none());
        }
        drop(answer_c);
        let later = now + Duration::from_secs(2);
        let next = q.answer(&sent.call.unique_id, Ok(json!({})), later).expect("answered");
        assert_eq!(answer_b.try_recv(), Ok(Err(CommandError::Expired)));
        assert_eq!(next.expect("the first still due goes").call.action, "ClearCache");
    }

    #[test]
    fn a_callerror_answer_reaches_the_caller_with_its_typed_code() {
        let now = Instant::now();
        let mut q = CommandQueue::new(10);
        let (a, mut answer_a) = command("Reset", soon(now));
        let sent = q.push(a, now).expect("sent");
        let text = format!(r#"[4,"{}","NotSupported","no resets here",{{"why":"x"}}]"#, sent.call.unique_id);
        let Ok(Frame::CallError(e)) = Frame::parse(&text) else { panic!("a CALLERROR frame") };
        let error = CommandError::from_call_error(e.code, e.description, e.details, Version::V16);
        assert!(q.answer(&sent.call.unique_id, Err(error), now).is_ok());
        match answer_a.try_recv() {
            Ok(Err(CommandError::CallError { code, description, details })) => {
                assert!(code.is(ErrorCode::NotSupported));
                assert_eq!(code.name(Version::V16), "NotSupported");
                assert_eq!(description, "no resets here");
                assert_eq!(details, json!({"why": "x"}));
            }
            other => panic!("expected the station's CALLERROR, got {other:?}"),
        }
        let (b, mut answer_b) = command("Reset", soon(now));
        let sent = q.push(b, now).expect("sent");
        let error = CommandError::from_call_error("VendorSpecific".into(), String::new(), json!({}), Version::V16);
        assert!(q.answer(&sent.call.unique_id, Err(error), now).is_ok());
        assert!(matches!(
            answer_b.try_recv(),
            Ok(Err(CommandError::CallError { code: CallErrorCode::Other(c), .. })) if c == "VendorSpecific"
        ));
    }

    #[test]
    fn past_the_bound_a_command_is_refused_at_once() {
        let now = Instant::now();
        let mut q = CommandQueue::new(2);
        let (a, _a) = command("Reset", soon(now));
        let (b, _b) = command("Reset", soon(now));
        let (c, _c) = command("Reset", soon(now));
        let (d, mut answer_d) = command("Reset", soon(now));
        assert!(q.push(a, now).is_some(), "on the wire: not counted as waiting");
        assert!(q.push(b, now).is_none());
        assert!(q.push(c, now).is_none());
        assert!(q.push(d, now).is_none());
        assert_eq!(answer_d.try_recv(), Ok(Err(CommandError::QueueFull)));
        assert_eq!(q.waiting(), 2);
    }

    #[test]
    fn closing_answers_every_command_it_holds() {
        let now = Instant::now();
        let mut q = CommandQueue::new(10);
        let (a, mut answer_a) = command("Reset", soon(now));
        let (b, mut answer_b) = command("ClearCache", soon(now));
        assert!(q.push(a, now).is_some());
        assert!(q.push(b, now).is_none());
        q.close();
        assert_eq!(answer_a.try_recv(), Ok(Err(CommandError::Disconnected)));
        assert_eq!(answer_b.try_recv(), Ok(Err(CommandError::NotSent)));
        assert_eq!(q.waiting(), 0);
    }
}
