//! One declaration per OCPP action and version: its name, who sends it, whether its effects must be
//! on disk before it is answered, its schemas and, for an action a station sends, its handler.
//!
//! Each version declares its table once, with `declare_actions!`, in its own module
//! ([`super::v16::ACTIONS`], [`super::v201::ACTIONS`]). Everything else is read from the tables:
//! the schemas compiled ([`super::schema`]), the checks every CALL passes and the dispatch to its
//! handler ([`super::handler`]), the command API's list of commands ([`super::Version::command_actions`])
//! and the metric label of an action ([`label`]). Adding an action is one row and its handler file.

use super::common::notice::Notice;
use super::context::HandlerError;
use super::context::StationContext;
use super::rpc::Call;
use super::Version;
use futures_util::future::BoxFuture;
use serde_json::Value;

/// Who sends an action's CALL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sender {
    /// Station → central system.
    Station,
    /// Central system → station (a command of the command API).
    CentralSystem,
    /// Either side (DataTransfer).
    Both,
}

impl Sender {
    pub fn station_sends(self) -> bool {
        matches!(self, Sender::Station | Sender::Both)
    }

    pub fn central_system_sends(self) -> bool {
        matches!(self, Sender::CentralSystem | Sender::Both)
    }
}

/// Runs a handler on a CALL that passed the common checks: its CALLRESULT payload and notice.
pub type HandleFn =
    for<'a> fn(&'a StationContext<'a>, &'a Call) -> BoxFuture<'a, Result<(Value, Option<Notice>), HandlerError>>;

/// How the central system handles an action's CALL from a station.
#[derive(Clone, Copy)]
pub enum Handling {
    /// Not handled: the central system only sends it.
    None,
    /// Handled; `durable`: the handler changes state, which is flushed before the CALLRESULT.
    Handler { run: HandleFn, durable: bool },
}

/// One OCPP action of one version.
pub struct Action {
    pub name: &'static str,
    pub sender: Sender,
    /// The request schema (JSON text, vendored under `schemas/`).
    pub request_schema: &'static str,
    /// The response schema.
    pub response_schema: &'static str,
    pub handling: Handling,
}

impl std::fmt::Debug for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Action").field("name", &self.name).field("sender", &self.sender).finish_non_exhaustive()
    }
}

impl Action {
    /// Whether the handler's effects must be on disk before the answer.
    pub fn durable(&self) -> bool {
        matches!(self.handling, Handling::Handler { durable: true, .. })
    }
}

/// The declaration of `name` in `table` (sorted by name, as a test of each table checks).
pub fn find(table: &'static [Action], name: &str) -> Option<&'static Action> {
    table.binary_search_by(|a| a.name.cmp(name)).ok().map(|i| &table[i])
}

/// The action as a metric label: only names OCPP defines, so station input cannot create unbounded
/// label values; anything else is `unknown`.
pub fn label(action: &str) -> &'static str {
    Version::ALL.into_iter().find_map(|v| v.action(action)).map_or("unknown", |a| a.name)
}

/// Declares a version's actions, one row each, sorted by name:
///
/// ```text
/// pub static ACTIONS = schemas "v16", request "", response "Response";
///     Authorize: Station, volatile, handler(authorize);
///     BootNotification: Station, durable, handler(boot_notification);
///     CancelReservation: CentralSystem;
///     DataTransfer: Both, durable, handler(data_transfer);
/// ```
///
/// - the sender is a [`Sender`];
/// - `durable`: what the handler changed is flushed before the CALLRESULT; `volatile`: nothing to flush;
/// - `handler(module)`: `module::handle(ctx, module::Request)` answers a `module::Response`;
///   `handler(recorded {json})`: the message is kept as a station event and answered `json`
///   (`recorded::handle` of the version's module);
/// - the schemas are `schemas/{dir}/{Name}{request}.json` and `schemas/{dir}/{Name}{response}.json`.
macro_rules! declare_actions {
    (
        $(#[$meta:meta])*
        $vis:vis static $table:ident = schemas $dir:literal, request $request:literal, response $response:literal;
        $( $name:ident : $sender:ident $( , $durability:ident , handler ( $($handler:tt)+ ) )? ; )*
    ) => {
        $(#[$meta])*
        $vis static $table: &[$crate::ocpp::actions::Action] = &[$(
            $crate::ocpp::actions::Action {
                name: stringify!($name),
                sender: $crate::ocpp::actions::Sender::$sender,
                request_schema: include_str!(concat!(
                    env!("CARGO_MANIFEST_DIR"), "/schemas/", $dir, "/", stringify!($name), $request, ".json"
                )),
                response_schema: include_str!(concat!(
                    env!("CARGO_MANIFEST_DIR"), "/schemas/", $dir, "/", stringify!($name), $response, ".json"
                )),
                handling: declare_actions!(@handling $name $( $durability ( $($handler)+ ) )?),
            },
        )*];
    };
    (@handling $name:ident) => { $crate::ocpp::actions::Handling::None };
    (@handling $name:ident $durability:ident ( $($handler:tt)+ )) => {
        $crate::ocpp::actions::Handling::Handler {
            run: declare_actions!(@run $name $($handler)+),
            durable: declare_actions!(@durable $durability),
        }
    };
    (@durable durable) => { true };
    (@durable volatile) => { false };
    (@run $name:ident recorded $answer:tt) => {
        |ctx, call| Box::pin(recorded::handle(ctx, stringify!($name), &call.payload, serde_json::json!($answer)))
    };
    (@run $name:ident $module:ident) => {
        |ctx, call| Box::pin(async move { $crate::ocpp::context::run_handler!($module, ctx, call) })
    };
}
pub(crate) use declare_actions;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ocpp::Version;

    #[test]
    fn every_table_is_sorted_and_every_action_a_station_sends_is_handled() {
        for version in Version::ALL {
            let table = version.actions();
            assert!(table.windows(2).all(|w| w[0].name < w[1].name), "{version:?} table not sorted");
            for a in table {
                assert_eq!(find(table, a.name).map(|f| f.name), Some(a.name));
                let handled = matches!(a.handling, Handling::Handler { .. });
                assert_eq!(handled, a.sender.station_sends(), "{version:?} {}", a.name);
            }
        }
    }

    #[test]
    fn labels_are_the_action_names_and_anything_else_is_unknown() {
        assert_eq!(label("BootNotification"), "BootNotification");
        assert_eq!(label("TransactionEvent"), "TransactionEvent");
        assert_eq!(label("StartTransaction"), "StartTransaction");
        assert_eq!(label("NotifyReport"), "NotifyReport");
        assert_eq!(label("Teleport"), "unknown");
        assert_eq!(label("x".repeat(40).as_str()), "unknown");
        assert_eq!(label(""), "unknown");
    }
}
