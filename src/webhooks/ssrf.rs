//! Where a webhook may be delivered: the URL rules, the address rules, and a DNS resolver that applies
//! the address rules at connection time.
//!
//! A tenant chooses the URL, so without these rules a webhook would let anyone make the service send
//! requests into its own network (server-side request forgery). Two checks cover the two ways a host
//! can name an address:
//! - an IP literal in the URL is judged by [`check_url`] (the HTTP client connects to it without asking
//!   a resolver);
//! - a host name is judged by [`GuardedResolver`] each time it is resolved. The client connects to
//!   exactly the addresses the resolver returned, so a name that resolves to a public address when the
//!   webhook is registered and to `127.0.0.1` when it is delivered (DNS rebinding) is refused then.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use url::{Host, Url};

/// The longest webhook URL accepted, in bytes.
pub const MAX_URL_LEN: usize = 2048;

/// Why a webhook URL is refused. The messages are written for the API user who sent the URL.
#[derive(Debug, thiserror::Error)]
pub enum UrlError {
    /// The URL is longer than [`MAX_URL_LEN`].
    #[error("the URL is {len} bytes long; at most {max} are allowed")]
    TooLong {
        /// The URL's length in bytes.
        len: usize,
        /// The longest accepted.
        max: usize,
    },
    /// The text is not a URL.
    #[error("the URL is not valid: {0}")]
    Invalid(#[source] url::ParseError),
    /// The scheme is neither `http` nor `https`.
    #[error("the URL scheme must be http or https, not {0:?}")]
    Scheme(String),
    /// There is no host to deliver to.
    #[error("the URL has no host")]
    NoHost,
    /// The URL carries a user name or password (`user:pass@host`).
    #[error("the URL must not contain a user name or password; send credentials in the path or query instead")]
    Userinfo,
    /// The host is an IP address that webhooks may not reach.
    #[error("the URL's host {0} is a private, loopback, link-local or otherwise non-public address, which webhooks may not reach")]
    ForbiddenAddress(IpAddr),
}

impl UrlError {
    /// A stable machine-readable code for the API's `{code, message}` error body.
    pub fn code(&self) -> &'static str {
        match self {
            UrlError::TooLong { .. } => "url_too_long",
            UrlError::Invalid(_) => "url_invalid",
            UrlError::Scheme(_) => "url_scheme",
            UrlError::NoHost => "url_no_host",
            UrlError::Userinfo => "url_userinfo",
            UrlError::ForbiddenAddress(_) => "url_forbidden_address",
        }
    }
}

/// Parses and checks a webhook URL: `http` or `https`, a host, no user name or password, at most
/// [`MAX_URL_LEN`] bytes, and an IP-literal host that [`allowed_ip`] accepts.
///
/// The host is judged as the URL parser normalized it, so spellings such as `http://2130706433/` or
/// `http://0x7f.1/` are seen as the `127.0.0.1` they are. A host name is not resolved here:
/// [`GuardedResolver`] judges its addresses when a delivery connects.
pub fn check_url(url: &str, allow_private: bool) -> Result<Url, UrlError> {
    if url.len() > MAX_URL_LEN {
        return Err(UrlError::TooLong { len: url.len(), max: MAX_URL_LEN });
    }
    let parsed = Url::parse(url).map_err(UrlError::Invalid)?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(UrlError::Scheme(parsed.scheme().to_owned()));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(UrlError::Userinfo);
    }
    let ip = match parsed.host() {
        None => return Err(UrlError::NoHost),
        Some(Host::Domain("")) => return Err(UrlError::NoHost),
        Some(Host::Domain(_)) => None,
        Some(Host::Ipv4(v4)) => Some(IpAddr::V4(v4)),
        Some(Host::Ipv6(v6)) => Some(IpAddr::V6(v6)),
    };
    if let Some(ip) = ip {
        if !allowed_ip(ip, allow_private) {
            return Err(UrlError::ForbiddenAddress(ip));
        }
    }
    Ok(parsed)
}

/// Whether a webhook may connect to `ip`.
///
/// Always refused: the unspecified address (`0.0.0.0`, `::`), multicast, and broadcast. Unless
/// `allow_private` (tests, single-network deployments): loopback, private (RFC 1918), link-local, shared
/// address space (CGNAT `100.64/10`), `0/8`, IPv6 unique-local and site-local, and the other IPv4 ranges
/// that are never public (`192.0.0/24`, benchmarking `198.18/15`, reserved `240/4`). Documentation
/// ranges are allowed either way. An IPv6 address that carries an IPv4 one (mapped `::ffff:a.b.c.d`,
/// compatible `::a.b.c.d`, NAT64 `64:ff9b::a.b.c.d`, 6to4 `2002:aabb:ccdd::`) is judged as that IPv4
/// address, since that is where it leads.
pub fn allowed_ip(ip: IpAddr, allow_private: bool) -> bool {
    match ip {
        IpAddr::V4(v4) => allowed_v4(v4, allow_private),
        IpAddr::V6(v6) => allowed_v6(v6, allow_private),
    }
}

fn allowed_v4(ip: Ipv4Addr, allow_private: bool) -> bool {
    if ip.is_unspecified() || ip.is_broadcast() || ip.is_multicast() {
        return false;
    }
    if allow_private {
        return true;
    }
    let [a, b, c, _] = ip.octets();
    let non_public = a == 0
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        // Shared address space (RFC 6598), carrier-grade NAT: 100.64.0.0/10.
        || (a == 100 && (b & 0b1100_0000) == 64)
        // IETF protocol assignments (RFC 6890): 192.0.0.0/24.
        || (a == 192 && b == 0 && c == 0)
        // Benchmarking (RFC 2544): 198.18.0.0/15.
        || (a == 198 && (b & 0b1111_1110) == 18)
        // Reserved (RFC 1112), used as private space inside some cloud networks: 240.0.0.0/4.
        || a >= 240;
    !non_public
}

fn allowed_v6(ip: Ipv6Addr, allow_private: bool) -> bool {
    if ip.is_unspecified() || ip.is_multicast() {
        return false;
    }
    if ip.is_loopback() {
        return allow_private;
    }
    if let Some(v4) = embedded_v4(ip) {
        return allowed_v4(v4, allow_private);
    }
    if allow_private {
        return true;
    }
    let first = ip.segments()[0];
    let non_public = (first & 0xfe00) == 0xfc00 // unique local, fc00::/7
        || (first & 0xffc0) == 0xfe80 // link-local, fe80::/10
        || (first & 0xffc0) == 0xfec0; // site-local (deprecated, still routed by some), fec0::/10
    !non_public
}

/// The IPv4 address an IPv6 one leads to, if it carries one: mapped `::ffff:0:0/96`, compatible
/// `::/96` (deprecated), NAT64 `64:ff9b::/96`, or 6to4 `2002::/16`.
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    // `to_ipv4` covers both mapped and compatible addresses (`::` and `::1` are handled before this).
    if let Some(v4) = ip.to_ipv4() {
        return Some(v4);
    }
    let s = ip.segments();
    let octets = ip.octets();
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return Some(Ipv4Addr::new(octets[12], octets[13], octets[14], octets[15]));
    }
    if s[0] == 0x2002 {
        return Some(Ipv4Addr::new(octets[2], octets[3], octets[4], octets[5]));
    }
    None
}

/// Resolves `host` and returns its addresses, or fails if it has none or if ANY of them is refused by
/// [`allowed_ip`]: a name with one public and one private address is refused whole, since the client
/// could pick either.
pub async fn resolve_checked(host: &str, allow_private: bool) -> io::Result<Vec<SocketAddr>> {
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, 0)).await?.collect();
    if addrs.is_empty() {
        return Err(io::Error::new(io::ErrorKind::NotFound, format!("{host} resolves to no address")));
    }
    if let Some(refused) = addrs.iter().find(|a| !allowed_ip(a.ip(), allow_private)) {
        tracing::debug!(host, address = %refused.ip(), "webhook host refused: it resolves to a non-public address");
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("{host} resolves to a private address ({}), which webhooks may not reach", refused.ip()),
        ));
    }
    Ok(addrs)
}

/// A DNS resolver for reqwest that refuses a host name resolving to any address [`allowed_ip`] refuses.
///
/// reqwest connects to the addresses this returns and resolves nothing itself, so the check holds at
/// connection time. It is not consulted for a URL whose host is an IP literal: [`check_url`] is.
#[derive(Debug, Clone, Copy)]
pub struct GuardedResolver {
    allow_private: bool,
}

impl GuardedResolver {
    /// A resolver applying [`allowed_ip`] with `allow_private`.
    pub fn new(allow_private: bool) -> Self {
        GuardedResolver { allow_private }
    }
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let allow_private = self.allow_private;
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs = resolve_checked(&host, allow_private).await?;
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("a test IP")
    }

    #[test]
    fn always_refused_whatever_allow_private_says() {
        for s in ["0.0.0.0", "255.255.255.255", "224.0.0.1", "239.255.255.250", "::", "ff02::1", "::ffff:0.0.0.0"] {
            assert!(!allowed_ip(ip(s), true), "{s} allowed with allow_private");
            assert!(!allowed_ip(ip(s), false), "{s} allowed");
        }
    }

    #[test]
    fn private_ranges_are_refused_unless_allowed() {
        for s in [
            "127.0.0.1",
            "127.255.255.254",
            "10.0.0.1",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "100.127.255.255",
            "0.1.2.3",
            "192.0.0.8",
            "198.18.0.1",
            "198.19.255.255",
            "240.0.0.1",
            "::1",
            "fe80::1",
            "febf::1",
            "fc00::1",
            "fd12:3456::1",
            "fec0::1",
            "::ffff:127.0.0.1",
            "::ffff:10.1.2.3",
            "::ffff:169.254.169.254",
            "::127.0.0.1",
            "64:ff9b::7f00:1",
            "2002:c0a8:0101::1",
        ] {
            assert!(!allowed_ip(ip(s), false), "{s} allowed");
            assert!(allowed_ip(ip(s), true), "{s} refused with allow_private");
        }
    }

    #[test]
    fn public_and_documentation_addresses_are_allowed() {
        for s in [
            "1.1.1.1",
            "8.8.8.8",
            "93.184.216.34",
            "172.15.255.255",
            "172.32.0.1",
            "100.63.255.255",
            "100.128.0.1",
            "169.253.0.1",
            "192.0.2.1",
            "198.51.100.7",
            "203.0.113.9",
            "2001:db8::1",
            "2606:4700:4700::1111",
            "::ffff:1.1.1.1",
            "64:ff9b::808:808",
            "2002:0808:0808::1",
        ] {
            assert!(allowed_ip(ip(s), false), "{s} refused");
            assert!(allowed_ip(ip(s), true), "{s} refused with allow_private");
        }
    }

    #[test]
    fn good_urls_pass() {
        for u in [
            "https://example.com/hook",
            "http://example.com:8080/a?b=c",
            "https://93.184.216.34/x",
            "https://[2001:db8::1]/",
        ] {
            let parsed = check_url(u, false).unwrap_or_else(|e| panic!("{u}: {e}"));
            assert!(parsed.host().is_some());
        }
        assert!(check_url("http://127.0.0.1:8080/", true).is_ok());
    }

    #[test]
    fn other_schemes_are_refused() {
        for u in ["ftp://example.com/", "file:///etc/passwd", "gopher://example.com/", "ws://example.com/"] {
            assert!(matches!(check_url(u, true), Err(UrlError::Scheme(_))), "{u}");
        }
    }

    #[test]
    fn userinfo_is_refused() {
        for u in ["https://user:pass@example.com/", "https://user@example.com/", "https://:pass@example.com/"] {
            assert!(matches!(check_url(u, true), Err(UrlError::Userinfo)), "{u}");
        }
    }

    #[test]
    fn missing_hosts_and_junk_are_refused() {
        assert!(matches!(check_url("not a url", true), Err(UrlError::Invalid(_))));
        assert!(matches!(check_url("https://", true), Err(UrlError::Invalid(_))));
        assert!(matches!(check_url("/relative/path", true), Err(UrlError::Invalid(_))));
        assert!(matches!(check_url("mailto:a@example.com", true), Err(UrlError::Scheme(_))));
    }

    #[test]
    fn long_urls_are_refused() {
        let base = "https://example.com/";
        let ok = format!("{base}{}", "a".repeat(MAX_URL_LEN - base.len()));
        assert!(check_url(&ok, false).is_ok());
        let long = format!("{ok}a");
        assert!(
            matches!(check_url(&long, false), Err(UrlError::TooLong { len, max: MAX_URL_LEN }) if len == MAX_URL_LEN + 1)
        );
    }

    #[test]
    fn ip_literals_are_judged_as_the_parser_normalizes_them() {
        for u in [
            "http://127.0.0.1/",
            "http://2130706433/",
            "http://0x7f.1/",
            "http://0177.0.0.1/",
            "http://[::1]/",
            "http://[::ffff:127.0.0.1]/",
            "http://[::ffff:7f00:1]/",
            "http://169.254.169.254/latest/meta-data/",
            "http://0.0.0.0:8080/",
        ] {
            assert!(matches!(check_url(u, false), Err(UrlError::ForbiddenAddress(_))), "{u}");
        }
        assert!(matches!(check_url("http://0.0.0.0/", true), Err(UrlError::ForbiddenAddress(_))));
    }

    #[test]
    fn error_messages_and_codes_are_for_api_users() {
        let e = check_url("http://10.0.0.1/", false).unwrap_err();
        assert_eq!(e.code(), "url_forbidden_address");
        assert!(e.to_string().contains("10.0.0.1"), "{e}");
        let e = check_url("ftp://x/", false).unwrap_err();
        assert_eq!(e.to_string(), "the URL scheme must be http or https, not \"ftp\"");
    }

    #[tokio::test]
    async fn a_name_resolving_to_loopback_is_refused_unless_allowed() {
        let err = resolve_checked("localhost", false).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::PermissionDenied);
        assert!(err.to_string().contains("resolves to a private address"), "{err}");
        let addrs = resolve_checked("localhost", true).await.expect("localhost resolves");
        assert!(addrs.iter().all(|a| a.ip().is_loopback()));
    }

    #[tokio::test]
    async fn the_resolver_refuses_through_the_reqwest_trait() {
        let resolver = GuardedResolver::new(false);
        let name: Name = "localhost".parse().expect("a valid name");
        let err = match resolver.resolve(name).await {
            Ok(_) => panic!("localhost resolved"),
            Err(e) => e,
        };
        assert!(err.to_string().contains("resolves to a private address"), "{err}");
        let name: Name = "localhost".parse().expect("a valid name");
        let addrs: Vec<SocketAddr> = match GuardedResolver::new(true).resolve(name).await {
            Ok(addrs) => addrs.collect(),
            Err(e) => panic!("{e}"),
        };
        assert!(!addrs.is_empty());
    }
}
