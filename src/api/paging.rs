//! What every list route shares: `limit` and `cursor` in, `{items, next_cursor}` out. A cursor is
//! opaque to callers: the list it came from and the key of the last record the page read, so the
//! next page starts right after it however rows were added or removed in between.

use super::ApiError;
use crate::limits::{self, Limit};
use crate::model::{Page, PageRequest, DEFAULT_LIMIT, MAX_LIMIT};
use actix_web::http::header::ContentType;
use actix_web::{web, HttpResponse};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::Deserialize;
use serde_json::{json, Value};

/// Which list a cursor belongs to: one list's cursor is refused by another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum List {
    Stations,
    IdTags,
    Transactions,
    MeterValues,
    Events,
}

impl List {
    fn tag(self) -> &'static str {
        match self {
            List::Stations => "stations",
            List::IdTags => "id-tags",
            List::Transactions => "transactions",
            List::MeterValues => "meter-values",
            List::Events => "events",
        }
    }
}

/// The cursor a page hands out for going on after `key`.
pub fn cursor(list: List, key: &str) -> String {
    URL_SAFE_NO_PAD.encode(format!("{}:{key}", list.tag()))
}

fn bad_cursor() -> ApiError {
    ApiError::invalid("invalid_cursor", "cursor is not one this list handed out")
}

/// The key a cursor names, when it came from `list`.
fn key_of(list: List, cursor: &str) -> Result<String, ApiError> {
    let bytes = URL_SAFE_NO_PAD.decode(cursor).map_err(|_| bad_cursor())?;
    let text = String::from_utf8(bytes).map_err(|_| bad_cursor())?;
    let (tag, key) = text.split_once(':').ok_or_else(bad_cursor)?;
    if tag != list.tag() {
        return Err(bad_cursor());
    }
    Ok(key.to_string())
}

/// A time-ordered list's key ([`crate::model::TimeKey`]) as a cursor writes it: `{µs}.{n}`.
pub fn time_key_text((t, n): crate::model::TimeKey) -> String {
    format!("{t}.{n}")
}

/// A time-ordered list's key read back from a cursor, when it is one.
pub fn parse_time_key(k: String) -> Option<crate::model::TimeKey> {
    let (t, n) = k.split_once('.')?;
    Some((t.parse().ok()?, n.parse().ok()?))
}

/// The query of a list route with no filter of its own: `limit` and `cursor` only (any other
/// parameter is refused).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PageQuery {
    pub limit: Option<usize>,
    pub cursor: Option<String>,
}

/// The page asked for: `limit` between 1 and [`MAX_LIMIT`] ([`DEFAULT_LIMIT`] when not given), the
/// cursor's key read by `parse`, and at most `budget` records read (`limits.list_scan_records`).
pub fn request<K>(
    list: List,
    limit: Option<usize>,
    cursor: Option<&str>,
    budget: usize,
    parse: impl Fn(String) -> Option<K>,
) -> Result<PageRequest<K>, ApiError> {
    let limit = limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::invalid("invalid_limit", format!("limit must be between 1 and {MAX_LIMIT}")));
    }
    let after = match cursor {
        None => None,
        Some(c) => Some(parse(key_of(list, c)?).ok_or_else(bad_cursor)?),
    };
    Ok(PageRequest { after, limit, budget })
}

/// A page's response: its items as `view` shows them, and the cursor of the next page (`null`
/// after the last) from the key `key` writes. A page its budget cut short is counted. The body (up
/// to a thousand records shown and written as JSON) is made on the blocking pool: the worker that
/// serves this request also serves stations.
pub async fn respond<T, K>(
    list: List,
    page: Page<T, K>,
    mut view: impl FnMut(T) -> Option<Value> + Send + 'static,
    key: impl FnOnce(K) -> String + Send + 'static,
) -> Result<HttpResponse, ApiError>
where
    T: Send + 'static,
    K: Send + 'static,
{
    if page.budget_spent {
        limits::hit(Limit::ListScan);
    }
    let body = web::block(move || {
        let items: Vec<Value> = page.items.into_iter().filter_map(&mut view).collect();
        serde_json::to_vec(&json!({
            "items": items,
            "next_cursor": page.next.map(|k| cursor(list, &key(k))),
        }))
    })
    .await
    .map_err(|e| ApiError::Internal(format!("a page's body: {e}")))?
    .map_err(|e| ApiError::Internal(format!("a page's body: {e}")))?;
    Ok(HttpResponse::Ok().content_type(ContentType::json()).body(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_reads_back_only_in_its_own_list() {
        let c = cursor(List::Transactions, "42");
        let parse = |k: String| k.parse::<i32>().ok();
        assert_eq!(request(List::Transactions, None, Some(&c), 10, parse).unwrap().after, Some(42));
        assert!(request(List::Stations, None, Some(&c), 10, Some).is_err(), "another list's cursor");
        assert!(request(List::Transactions, None, Some("not base64!"), 10, parse).is_err());
        assert!(request(List::Transactions, None, Some(&cursor(List::Transactions, "x")), 10, parse).is_err());
    }

    #[test]
    fn a_time_key_reads_back_as_written_and_nothing_else_reads_as_one() {
        for key in [(1_764_000_000_000_000, 1), (-5, 0), (0, u32::MAX)] {
            assert_eq!(parse_time_key(time_key_text(key)), Some(key));
        }
        for bad in ["", "12", "x.1", "1.x", "1.-1", "1.2.3"] {
            assert_eq!(parse_time_key(bad.to_string()), None, "{bad:?}");
        }
    }

    #[test]
    fn limits_outside_one_to_the_maximum_are_refused() {
        let r = |limit| request(List::IdTags, limit, None, 10, Some).map(|p| p.limit);
        assert_eq!(r(None).unwrap(), DEFAULT_LIMIT);
        assert_eq!(r(Some(MAX_LIMIT)).unwrap(), MAX_LIMIT);
        assert!(r(Some(0)).is_err());
        assert!(r(Some(MAX_LIMIT + 1)).is_err());
    }
}
