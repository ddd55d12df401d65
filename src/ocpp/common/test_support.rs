//! The fixture of every handler test, whatever the version: a store with one accepted station, and
//! CALLs sent to it through [`handle_call`] as a session would, without sockets.

use crate::ids::{AccountId, StationId};
use crate::model::{Registration, Station};
use crate::ocpp::context::{HandlerSettings, StationContext};
use crate::ocpp::handler::{handle_call, Reply};
use crate::ocpp::rpc::Call;
use crate::store::prelude::*;
use crate::store::SledStore;
use serde_json::Value;
use std::time::Duration;

/// A temporary store holding one account with one accepted station, `CP1`.
pub struct Fixture {
    pub store: SledStore,
    pub settings: HandlerSettings,
    pub version: crate::ocpp::Version,
    /// The station's event quota, when the test sets one.
    pub event_quota: Option<crate::limits::quota::WindowQuota<String>>,
    /// [`ACCOUNT`] and [`STATION`], for the context to borrow.
    account_id: AccountId,
    station_id: StationId,
    _dir: tempfile::TempDir,
}

pub const ACCOUNT: &str = "acct-1";
pub const STATION: &str = "CP1";

impl Fixture {
    pub async fn new() -> Self {
        Self::with_version(crate::ocpp::Version::V16).await
    }

    pub async fn with_version(version: crate::ocpp::Version) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path(), crate::store::CommitPolicy::default()).unwrap();
        let station =
            Station::new(&ACCOUNT.into(), &STATION.into(), String::new(), Registration::Accepted, Default::default());
        store.create_station(&station).await.unwrap();
        let settings = HandlerSettings::plain(Duration::from_secs(300), Duration::from_secs(60));
        Self {
            store,
            settings,
            version,
            event_quota: None,
            account_id: ACCOUNT.into(),
            station_id: STATION.into(),
            _dir: dir,
        }
    }

    /// A fixture whose station may keep `bytes` of events.
    pub async fn with_event_quota(version: crate::ocpp::Version, bytes: u64) -> Self {
        let mut f = Self::with_version(version).await;
        f.event_quota = Some(crate::limits::quota::WindowQuota::new(bytes, Duration::from_secs(3600)));
        f
    }

    pub fn ctx(&self) -> StationContext<'_> {
        self.ctx_with(Registration::Accepted)
    }

    pub fn ctx_with(&self, registration: Registration) -> StationContext<'_> {
        StationContext {
            version: self.version,
            store: &self.store,
            account_id: &self.account_id,
            station_id: &self.station_id,
            tenant_slug: "tenant",
            registration,
            settings: &self.settings,
            event_quota: self.event_quota.as_ref(),
            feed: Default::default(),
        }
    }

    /// Sends one CALL through the dispatcher.
    pub async fn call(&self, action: &str, payload: Value) -> Reply {
        let call = Call { unique_id: "u1".into(), action: action.into(), payload };
        handle_call(&self.ctx(), &call).await
    }

    pub async fn ok(&self, action: &str, payload: Value) -> Value {
        match self.call(action, payload).await {
            Reply::Result { payload, .. } => payload,
            Reply::Error(e) => panic!("{action} failed: {e:?}"),
        }
    }

    pub async fn error_code(&self, action: &str, payload: Value) -> String {
        match self.call(action, payload).await {
            Reply::Result { payload, .. } => {
                panic!("{action} unexpectedly succeeded: {payload}")
            }
            Reply::Error(e) => e.code,
        }
    }
}
