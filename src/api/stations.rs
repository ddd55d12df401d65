//! Stations: provisioning, their live and stored state, removal.

use super::paging::{self, List};
use super::{check_printable, check_station_id, ApiError, Tenant};
use crate::actors::account::{self, GetLiveView, LiveStation};
use crate::actors::StationKey;
use crate::auth;
use crate::fleet::Presence;
use crate::ids::{AccountId, StationId};
use crate::limits::{self, Limit};
use crate::model::{
    Account, Page, PageBuilder, PageRequest, Registration, SecurityProfile, Station, StationEvent, StationFilter,
    MAX_LIMIT,
};
use crate::state::AppState;
use actix_web::{web, HttpRequest, HttpResponse};
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::HashMap;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewStation {
    id: StationId,
    password: Option<String>,
    registration: Option<Registration>,
    security_profile: Option<SecurityProfile>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StationChange {
    registration: Option<Registration>,
    security_profile: Option<SecurityProfile>,
}

/// Profiles 2 and 3 need the TLS listener, and 3 a client CA to check certificates against.
pub(crate) fn check_profile(state: &AppState, profile: SecurityProfile) -> Result<(), ApiError> {
    let tls = &state.settings.tls;
    match profile {
        SecurityProfile::Basic => Ok(()),
        SecurityProfile::TlsBasic if tls.enabled => Ok(()),
        SecurityProfile::ClientCertificate if tls.client_certificates() => Ok(()),
        SecurityProfile::TlsBasic => {
            Err(ApiError::invalid("invalid_field", "security profile 2 needs the TLS listener (tls.enabled)"))
        }
        SecurityProfile::ClientCertificate => Err(ApiError::invalid(
            "invalid_field",
            "security profile 3 needs the TLS listener with a client CA (tls.enabled, tls.client_ca_path)",
        )),
    }
}

/// The URL a station connects to. Profile 1: the configured public URL, or the API request's own
/// host. Profiles 2 and 3: the TLS public URL, or wss:// on the request's host name and the TLS port.
pub(crate) fn ocpp_url(state: &AppState, req: &HttpRequest, account: &Account, station: &Station) -> String {
    let info = req.connection_info();
    let base = match station.security_profile {
        SecurityProfile::Basic if state.settings.server.public_url.is_empty() => {
            let scheme = if info.scheme() == "https" { "wss" } else { "ws" };
            format!("{scheme}://{}", info.host())
        }
        SecurityProfile::Basic => state.settings.server.public_url.trim_end_matches('/').to_string(),
        SecurityProfile::TlsBasic | SecurityProfile::ClientCertificate if state.settings.tls.public_url.is_empty() => {
            let host = info.host();
            // Strip the port of the request's host (an IPv6 literal keeps its brackets).
            let name = match host.rsplit_once(':') {
                Some((name, port)) if !name.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => name,
                _ => host,
            };
            format!("wss://{name}:{}", state.tls_port.unwrap_or(state.settings.tls.port))
        }
        SecurityProfile::TlsBasic | SecurityProfile::ClientCertificate => {
            state.settings.tls.public_url.trim_end_matches('/').to_string()
        }
    };
    format!("{base}/ocpp/{}/{}", account.slug, station.id)
}

/// Where the account's stations are connected: this node's live view, and in cluster mode the
/// presence of those connected to other nodes.
struct Connections {
    /// This node's id.
    here: String,
    live: HashMap<StationId, LiveStation>,
    elsewhere: HashMap<StationId, Presence>,
}

impl Connections {
    async fn of(state: &AppState, account_id: &AccountId, station_ids: &[StationId]) -> Connections {
        let live = live_view(state, account_id).await;
        let others: Vec<StationId> = station_ids.iter().filter(|id| !live.contains_key(*id)).cloned().collect();
        let elsewhere = state.fleet.elsewhere(account_id, &others).await;
        Connections { here: state.fleet.node_id().to_string(), live, elsewhere }
    }
}

fn view(state: &AppState, req: &HttpRequest, account: &Account, s: &Station, conns: &Connections) -> Value {
    let live = conns.live.get(&s.id);
    let elsewhere = conns.elsewhere.get(&s.id);
    let last_seen = match (s.last_seen, live.map(|l| l.last_message_at)) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    };
    let node = match (live, elsewhere) {
        (Some(_), _) => Some(conns.here.clone()),
        (None, Some(p)) => Some(p.node.clone()),
        (None, None) => None,
    };
    json!({
        "id": s.id,
        "ocpp_url": ocpp_url(state, req, account, s),
        "security_profile": s.security_profile,
        "registration": s.registration,
        "connected": node.is_some(),
        "node": node,
        "protocol": live
            .map(|l| l.protocol.clone())
            .or_else(|| elsewhere.map(|p| p.protocol.clone()))
            .or_else(|| s.protocol.clone()),
        "connected_at": live.map(|l| l.connected_at).or_else(|| elsewhere.map(|p| p.connected_at)),
        "last_seen": last_seen,
        "boot": s.boot,
        "connectors": s.connectors,
        "open_transactions": live.map(|l| l.open_transactions.clone()).unwrap_or_default(),
        "firmware_status": s.firmware_status,
        "diagnostics_status": s.diagnostics_status,
        "credentials": super::credentials::view(s),
        "created_at": s.created_at,
    })
}

async fn live_view(state: &AppState, account_id: &AccountId) -> HashMap<StationId, LiveStation> {
    account::tell(&state.accounts, account_id, GetLiveView).await.unwrap_or_default()
}

async fn find(state: &AppState, account: &Account, id: &StationId) -> Result<Station, ApiError> {
    state.account_store.station(&account.id, id).await?.ok_or_else(|| ApiError::NotFound(format!("no station {id}")))
}

/// Applies `change` to the tenant's station `id` (404 when it has none): the record as changed.
pub(crate) async fn change(
    state: &AppState,
    account_id: &AccountId,
    id: &StationId,
    change: impl Fn(&mut Station) + Send + Sync,
) -> Result<Station, ApiError> {
    let changed = state.account_store.update_station(account_id, id, &change).await?;
    changed.ok_or_else(|| ApiError::NotFound(format!("no station {id}")))
}

pub async fn create(
    state: web::Data<AppState>,
    req: HttpRequest,
    Tenant(account): Tenant,
    body: web::Json<NewStation>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    check_station_id(&body.id)?;
    // OCPP security profile 1 asks for 16 to 40 characters.
    if let Some(p) = &body.password {
        check_printable("password", p, 16, 40)?;
    }
    let security_profile = body.security_profile.unwrap_or_default();
    check_profile(&state, security_profile)?;
    let registration = body.registration.unwrap_or(if state.settings.ocpp.auto_accept_stations {
        Registration::Accepted
    } else {
        Registration::Pending
    });
    check_station_quota(&state, &account, 1).await?;
    let (password, password_hash) = station_secret(&state, body.password).await?;
    let station = Station::new(&account.id, &body.id, password_hash, registration, security_profile);
    state.account_store.create_station(&station).await?;
    tracing::info!(account = %account.id, station = %station.id, "station provisioned");
    Ok(HttpResponse::Created().json(json!({
        "id": station.id,
        "ocpp_url": ocpp_url(&state, &req, &account, &station),
        "username": station.id,
        "password": password,
        "security_profile": station.security_profile,
        "registration": station.registration,
    })))
}

/// `GET /stations`: a page, by id, narrowed by registration, protocol and whether connected.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    limit: Option<usize>,
    cursor: Option<String>,
    registration: Option<Registration>,
    protocol: Option<String>,
    connected: Option<bool>,
}

pub async fn list(
    state: web::Data<AppState>,
    req: HttpRequest,
    Tenant(account): Tenant,
    q: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    let q = q.into_inner();
    let budget = state.limits.settings.list_scan_records;
    let page = paging::request(List::Stations, q.limit, q.cursor.as_deref(), budget, |k| Some(StationId::from(k)))?;
    let filter = StationFilter { registration: q.registration, protocol: q.protocol };
    let store = &state.account_store;
    let Some(connected) = q.connected else {
        let page = store.stations_page(&account.id, &filter, &page).await?;
        let ids: Vec<StationId> = page.items.iter().map(|s| s.id.clone()).collect();
        let conns = Connections::of(&state, &account.id, &ids).await;
        // A station's view reads live state: made here, written out on the blocking pool.
        let views: Vec<Value> = page.items.iter().map(|s| view(&state, &req, &account, s, &conns)).collect();
        let page = Page { items: views, next: page.next, budget_spent: page.budget_spent };
        return paging::respond(List::Stations, page, Some, String::from).await;
    };
    // Whether a station is connected is live state, not in its record: stored pages are read in
    // order and each station checked, at most `budget` stations and four stored pages (each of
    // which reads at most `budget` records) for one page.
    let mut builder = PageBuilder::new(&page);
    let mut after = page.after.clone();
    let mut reads = 0;
    let mut views = std::collections::HashMap::new();
    loop {
        let chunk = PageRequest { after: after.clone(), limit: MAX_LIMIT.min(builder.wanted()), budget };
        let stored = store.stations_page(&account.id, &filter, &chunk).await?;
        reads += 1;
        let ids: Vec<StationId> = stored.items.iter().map(|s| s.id.clone()).collect();
        let conns = Connections::of(&state, &account.id, &ids).await;
        let mut taken = true;
        for s in &stored.items {
            let is_connected = conns.live.contains_key(&s.id) || conns.elsewhere.contains_key(&s.id);
            let matches = is_connected == connected;
            if !builder.offer(s.id.clone(), s.id.clone(), matches) {
                taken = false;
                break;
            }
            if matches {
                views.insert(s.id.clone(), view(&state, &req, &account, s, &conns));
            }
        }
        match stored.next {
            Some(next) if taken && reads == 4 => {
                builder.stop(next);
                break;
            }
            Some(next) if taken => after = Some(next),
            _ => break,
        }
    }
    let page = builder.finish();
    let items: Vec<Value> = page.items.iter().filter_map(|id| views.remove(id)).collect();
    let page = Page { items, next: page.next, budget_spent: page.budget_spent };
    paging::respond(List::Stations, page, Some, String::from).await
}

pub async fn get(
    state: web::Data<AppState>,
    req: HttpRequest,
    Tenant(account): Tenant,
    path: web::Path<StationId>,
) -> Result<HttpResponse, ApiError> {
    let station = find(&state, &account, &path).await?;
    let conns = Connections::of(&state, &account.id, std::slice::from_ref(&station.id)).await;
    Ok(HttpResponse::Ok().json(view(&state, &req, &account, &station, &conns)))
}

pub async fn update(
    state: web::Data<AppState>,
    req: HttpRequest,
    Tenant(account): Tenant,
    path: web::Path<StationId>,
    body: web::Json<StationChange>,
) -> Result<HttpResponse, ApiError> {
    let StationChange { registration, security_profile } = body.into_inner();
    if registration.is_none() && security_profile.is_none() {
        return Err(ApiError::invalid("invalid_field", "give registration, security_profile or both"));
    }
    if let Some(profile) = security_profile {
        check_profile(&state, profile)?;
    }
    let before = find(&state, &account, &path).await?;
    let station = change(&state, &account.id, &path, |s| {
        if let Some(r) = registration {
            s.registration = r;
        }
        if let Some(p) = security_profile {
            s.security_profile = p;
        }
    })
    .await?;
    if station.registration != before.registration {
        let event = crate::model::events::registration_changed(&station.id, before.registration, station.registration);
        super::events::emit(&state, &account.id, event).await;
    }
    // A blocked station loses its session; so does one whose profile changed, since its connection
    // was authenticated under the old profile's rules.
    if registration == Some(Registration::Blocked) || station.security_profile != before.security_profile {
        let key = StationKey { account_id: account.id.clone(), station_id: station.id.clone() };
        state.fleet.close(&key).await?;
    }
    let conns = Connections::of(&state, &account.id, std::slice::from_ref(&station.id)).await;
    Ok(HttpResponse::Ok().json(view(&state, &req, &account, &station, &conns)))
}

/// Refuses (403 quota_exceeded) provisioning that would take the tenant past
/// `limits.stations_per_tenant`. Checked before the passwords are hashed; two requests racing at the
/// edge may both pass.
async fn check_station_quota(state: &AppState, account: &Account, adding: usize) -> Result<(), ApiError> {
    let limit = state.limits.settings.stations_per_tenant;
    let have = state.account_store.station_count(&account.id).await?;
    if have + adding > limit {
        limits::hit(Limit::StationsPerTenant);
        return Err(ApiError::QuotaExceeded {
            message: format!("a tenant may have {limit} stations; this one has {have}"),
            limit,
        });
    }
    Ok(())
}

/// A station's password and the hash stored for it. The operator's `chosen` password is hashed with
/// argon2 at the configured (light) cost on the blocking pool, since it may be guessable; without
/// one, a password is generated ([`auth::STATION_SECRET_LEN`] random characters, about 190 bits) and
/// gets a keyed fast hash (see [`auth`]).
pub(crate) async fn station_secret(state: &AppState, chosen: Option<String>) -> Result<(String, String), ApiError> {
    let Some(password) = chosen else {
        let password = auth::random_secret(auth::STATION_SECRET_LEN);
        let hash = auth::hash_generated_secret(&password);
        return Ok((password, hash));
    };
    let (m, t) = (state.settings.ocpp.station_hash_memory_kib, state.settings.ocpp.station_hash_iterations);
    let hashing = password.clone();
    let hash = auth::argon2_job(move || auth::hash_password_with(&hashing, m, t))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok((password, hash))
}

/// Most stations one bulk request may provision.
const BULK_MAX: usize = 1000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BulkStations {
    stations: Vec<NewStation>,
}

/// `POST /stations/bulk`: provisions up to 1000 stations at once (for fleets and load tests). Stations
/// that exist already are left as they are and counted; generated passwords are returned once.
pub async fn create_bulk(
    state: web::Data<AppState>,
    Tenant(account): Tenant,
    body: web::Json<BulkStations>,
) -> Result<HttpResponse, ApiError> {
    let items = body.into_inner().stations;
    if items.is_empty() || items.len() > BULK_MAX {
        return Err(ApiError::invalid("invalid_field", format!("stations must hold 1 to {BULK_MAX} entries")));
    }
    for item in &items {
        check_station_id(&item.id)?;
        if let Some(p) = &item.password {
            check_printable("password", p, 16, 40)?;
        }
        check_profile(&state, item.security_profile.unwrap_or_default())?;
    }
    // Stations that exist already are not new: count only those the request would add.
    let mut adding = 0;
    for item in &items {
        if state.account_store.station(&account.id, &item.id).await?.is_none() {
            adding += 1;
        }
    }
    check_station_quota(&state, &account, adding).await?;
    let default_registration =
        if state.settings.ocpp.auto_accept_stations { Registration::Accepted } else { Registration::Pending };
    // Chosen passwords are hashed with argon2 on the blocking pool, a few at a time: argon2 is the
    // cost of provisioning them. Generated ones are hashed at once.
    let hashed: Vec<Result<(NewStation, String, String), ApiError>> = futures_util::stream::iter(items)
        .map(|item| {
            let state = state.clone();
            async move {
                let (password, hash) = station_secret(&state, item.password.clone()).await?;
                Ok((item, password, hash))
            }
        })
        .buffer_unordered(4)
        .collect()
        .await;
    let (mut created, mut existing, mut generated) = (0usize, 0usize, Vec::new());
    for entry in hashed {
        let (item, password, password_hash) = entry?;
        let registration = item.registration.unwrap_or(default_registration);
        let profile = item.security_profile.unwrap_or_default();
        let station = Station::new(&account.id, &item.id, password_hash, registration, profile);
        match state.account_store.create_station(&station).await {
            Ok(()) => {
                created += 1;
                if item.password.is_none() {
                    generated.push(json!({"id": item.id, "password": password}));
                }
            }
            Err(crate::store::StoreError::Conflict(_)) => existing += 1,
            Err(e) => return Err(e.into()),
        }
    }
    tracing::info!(account = %account.id, created, existing, "stations provisioned in bulk");
    Ok(HttpResponse::Ok().json(json!({"created": created, "existing": existing, "generated": generated})))
}

pub async fn delete(
    state: web::Data<AppState>,
    Tenant(account): Tenant,
    path: web::Path<StationId>,
) -> Result<HttpResponse, ApiError> {
    if !state.account_store.delete_station(&account.id, &path).await? {
        return Err(ApiError::NotFound(format!("no station {}", path.as_str())));
    }
    state.credentials.forget(&format!("{}/{}", account.id, path.as_str()));
    let key = StationKey { account_id: account.id.clone(), station_id: path.into_inner() };
    state.fleet.close(&key).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// `GET /stations/{id}/events`: a page of what the station reported outside transactions
/// (DataTransfer, security events, status reports, …), in the order received.
pub async fn events(
    state: web::Data<AppState>,
    Tenant(account): Tenant,
    path: web::Path<StationId>,
    q: web::Query<paging::PageQuery>,
) -> Result<HttpResponse, ApiError> {
    let station = find(&state, &account, &path).await?;
    let budget = state.limits.settings.list_scan_records;
    let page = paging::request(List::Events, q.limit, q.cursor.as_deref(), budget, paging::parse_time_key)?;
    let page = state.account_store.events_page(&account.id, &station.id, &page).await?;
    let view = |e: StationEvent| Some(json!({"action": e.action, "payload": e.payload, "received_at": e.received_at}));
    paging::respond(List::Events, page, view, paging::time_key_text).await
}

/// `GET /stations/{id}/variables`: the device model a 2.0.1 station reported (NotifyReport, NotifyEvent).
pub async fn variables(
    state: web::Data<AppState>,
    Tenant(account): Tenant,
    path: web::Path<StationId>,
) -> Result<HttpResponse, ApiError> {
    let station = find(&state, &account, &path).await?;
    let variables = state.account_store.variables(&account.id, &station.id).await?;
    Ok(HttpResponse::Ok().json(variables))
}
