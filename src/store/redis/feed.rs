//! The Redis store's feed and webhooks.
// PLACEHOLDER: to be written (helper).

use super::RedisStore;
use crate::ids::AccountId;
use crate::model::{EventDraft, FeedCutoffs, FeedEvent, PruneStep, Webhook, WebhookDelivery};
use crate::store::{StoreError, StoreResult, WebhookUpdate};

fn todo() -> StoreError {
    StoreError::backend("feed on Redis: not written yet")
}

impl RedisStore {
    pub(super) async fn append_feed_events(
        &self,
        _account_id: &AccountId,
        _origin: Option<(&str, u64)>,
        _events: &[EventDraft],
    ) -> StoreResult<()> {
        Err(todo())
    }
    pub(super) async fn feed_after_now(&self, _a: &AccountId, _after: u64, _limit: usize) -> StoreResult<Vec<FeedEvent>> {
        Err(todo())
    }
    pub(super) async fn feed_head_now(&self, _a: &AccountId) -> StoreResult<u64> {
        Err(todo())
    }
    pub(super) async fn prune_feed_now(
        &self,
        _a: &AccountId,
        _cutoffs: &FeedCutoffs,
        _after: Option<String>,
        _batch: usize,
    ) -> StoreResult<PruneStep> {
        Err(todo())
    }
    pub(super) async fn put_webhook_now(&self, _w: &Webhook) -> StoreResult<()> {
        Err(todo())
    }
    pub(super) async fn webhook_now(&self, _a: &AccountId, _id: &str) -> StoreResult<Option<Webhook>> {
        Err(todo())
    }
    pub(super) async fn webhooks_now(&self, _a: &AccountId) -> StoreResult<Vec<Webhook>> {
        Err(todo())
    }
    pub(super) async fn update_webhook_now(
        &self,
        _a: &AccountId,
        _id: &str,
        _update: WebhookUpdate<'_>,
    ) -> StoreResult<Option<Webhook>> {
        Err(todo())
    }
    pub(super) async fn delete_webhook_now(&self, _a: &AccountId, _id: &str) -> StoreResult<bool> {
        Err(todo())
    }
    pub(super) async fn webhook_accounts_now(&self) -> StoreResult<Vec<AccountId>> {
        Err(todo())
    }
    pub(super) async fn webhook_cursor_now(&self, _a: &AccountId, _id: &str) -> StoreResult<Option<u64>> {
        Err(todo())
    }
    pub(super) async fn set_webhook_cursor_now(&self, _a: &AccountId, _id: &str, _c: u64) -> StoreResult<()> {
        Err(todo())
    }
    pub(super) async fn webhook_deliveries_now(&self, _a: &AccountId, _id: &str) -> StoreResult<Vec<WebhookDelivery>> {
        Err(todo())
    }
    pub(super) async fn put_webhook_deliveries_now(
        &self,
        _a: &AccountId,
        _id: &str,
        _log: &[WebhookDelivery],
    ) -> StoreResult<()> {
        Err(todo())
    }
}
