//! Reconciling a transaction record from this node's log with the shared store's copy before it is
//! put there, so a replayed or older record never undoes what was recorded.

use crate::model::Transaction;
use std::collections::HashSet;

/// What to write to the shared store for a transaction record from this node's log, given the shared
/// store's copy; `None` when the shared copy already holds everything the record does. A record from
/// the log may be older than the shared copy (the log replayed after a crash, or the station served
/// by another node meanwhile), and must never undo what was recorded there:
/// - 1.6: a stopped transaction is final, the first stop recorded wins (as a retried StopTransaction
///   answers AlreadyStopped);
/// - 2.0.1: events are kept by seqNo; when each side has events the other lacks, the record gets all
///   of them and its energy is recomputed ([`Transaction::recompute_energy`], the rule the
///   TransactionEvent handler applies).
pub(super) fn reconcile(ours: &Transaction, theirs: Option<Transaction>) -> Option<Transaction> {
    let Some(theirs) = theirs else { return Some(ours.clone()) };
    if &theirs == ours {
        return None;
    }
    if ours.station_transaction_id.is_none() {
        return if theirs.stop.is_some() { None } else { Some(ours.clone()) };
    }
    let theirs_seqs: HashSet<u64> = theirs.events.iter().map(|e| e.seq_no).collect();
    let ours_seqs: HashSet<u64> = ours.events.iter().map(|e| e.seq_no).collect();
    if ours_seqs.is_subset(&theirs_seqs) {
        return None;
    }
    let theirs_only: Vec<_> = theirs.events.iter().filter(|e| !ours_seqs.contains(&e.seq_no)).cloned().collect();
    if theirs_only.is_empty() {
        return Some(ours.clone());
    }
    tracing::warn!(
        account = %ours.account_id,
        station = %ours.station_id,
        transaction_id = ours.id,
        "transaction events applied on two nodes; merging them"
    );
    let latest = |t: &Transaction| t.events.iter().map(|e| e.seq_no).max();
    let mut merged = ours.clone();
    merged.events.extend(theirs_only);
    merged.events.sort_by_key(|e| e.seq_no);
    merged.start_timestamp = merged.start_timestamp.min(theirs.start_timestamp);
    if merged.stop.is_none() {
        merged.stop = theirs.stop.clone();
    }
    if merged.id_tag.is_none() {
        merged.id_tag = theirs.id_tag.clone();
        merged.id_tag_status = theirs.id_tag_status.clone();
    }
    if merged.evse_id.is_none() {
        merged.evse_id = theirs.evse_id;
    }
    if latest(&theirs) > latest(ours) && theirs.charging_state.is_some() {
        merged.charging_state = theirs.charging_state.clone();
    }
    merged.recompute_energy();
    Some(merged)
}
