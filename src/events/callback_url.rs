//! Which callback URLs the facade will call (no server-side request forgery): `https`
//! only, and never an address inside the operator's network (loopback, private,
//! link-local, shared/CGNAT, unique-local) unless the operator allows it, nor cloud
//! metadata, multicast, broadcast or unspecified addresses at all. The check is made
//! when a subscription is created (a 422 that says why) and again on every connection:
//! [`GuardedResolver`] drops forbidden addresses from every DNS answer, so a name that
//! resolved to a public address at creation and to `127.0.0.1` later (DNS rebinding)
//! is not called; hosts written as IP literals, which are never resolved, are checked
//! before each delivery by [`Policy::check_literal`].

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use url::{Host, Url};

/// The longest callback URL taken.
pub const MAX_URL_CHARS: usize = 2_048;

/// What the operator allows beyond public `https` URLs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Policy {
    pub allow_http: bool,
    pub allow_private: bool,
}

impl Policy {
    /// `url` as a callback: its syntax, scheme and, for an IP literal, its address.
    pub fn check_literal(&self, url: &str) -> Result<Url, String> {
        if url.chars().count() > MAX_URL_CHARS {
            return Err(format!("is longer than {MAX_URL_CHARS} characters"));
        }
        let parsed = Url::parse(url).map_err(|e| format!("is not an absolute URL ({e})"))?;
        match parsed.scheme() {
            "https" => {}
            "http" if self.allow_http => {}
            "http" => {
                return Err("must be https: plain http is refused (the operator can allow it with SUBSCRIPTION_ALLOW_HTTP=true)".into());
            }
            other => return Err(format!("must be https, not {other}")),
        }
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err("must not carry a user name or password".into());
        }
        if parsed.fragment().is_some() {
            return Err("must not have a fragment (#…)".into());
        }
        match parsed.host() {
            None => Err("has no host".into()),
            Some(Host::Ipv4(ip)) => self.address(IpAddr::V4(ip)).map(|()| parsed),
            Some(Host::Ipv6(ip)) => self.address(IpAddr::V6(ip)).map(|()| parsed),
            Some(Host::Domain(_)) => Ok(parsed),
        }
    }

    /// `url` as a callback, its host name resolved now: every address it has must be
    /// one the policy allows.
    pub async fn check(&self, url: &str) -> Result<Url, String> {
        let parsed = self.check_literal(url)?;
        if let Some(Host::Domain(name)) = parsed.host() {
            let port = parsed.port_or_known_default().unwrap_or(443);
            let addresses: Vec<SocketAddr> = tokio::net::lookup_host((name, port))
                .await
                .map_err(|_| format!("names the host {name:?}, which does not resolve"))?
                .collect();
            if addresses.is_empty() {
                return Err(format!("names the host {name:?}, which has no address"));
            }
            for address in addresses {
                self.address(address.ip())
                    .map_err(|why| format!("names the host {name:?}, which resolves to {why}"))?;
            }
        }
        Ok(parsed)
    }

    /// Whether the facade may connect to `ip`; else why not.
    pub fn address(&self, ip: IpAddr) -> Result<(), String> {
        match classify(ip) {
            Class::Public => Ok(()),
            Class::Internal(_) if self.allow_private => Ok(()),
            Class::Internal(what) => Err(format!(
                "{ip}, a {what} address, which is refused (the operator can allow such addresses with SUBSCRIPTION_ALLOW_PRIVATE_NETWORKS=true)"
            )),
            Class::Never(what) => Err(format!("{ip}, a {what} address, which is always refused")),
        }
    }
}

enum Class {
    Public,
    /// Inside some network: allowed only when the operator says so.
    Internal(&'static str),
    /// Never a receiver.
    Never(&'static str),
}

fn classify(ip: IpAddr) -> Class {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

fn classify_v4(ip: Ipv4Addr) -> Class {
    let [a, b, c, _] = ip.octets();
    // AWS, GCP, Azure, OpenStack (169.254.169.254) and Alibaba (100.100.100.200).
    if ip == Ipv4Addr::new(169, 254, 169, 254) || ip == Ipv4Addr::new(100, 100, 100, 200) {
        return Class::Never("cloud metadata");
    }
    if a == 0 {
        return Class::Never("unspecified (\"this network\")");
    }
    if ip.is_broadcast() {
        return Class::Never("broadcast");
    }
    if ip.is_multicast() {
        return Class::Never("multicast");
    }
    if a >= 240 {
        return Class::Never("reserved");
    }
    if ip.is_loopback() {
        return Class::Internal("loopback");
    }
    if ip.is_private() {
        return Class::Internal("private");
    }
    if ip.is_link_local() {
        return Class::Internal("link-local");
    }
    if a == 100 && (64..128).contains(&b) {
        return Class::Internal("shared (CGNAT)");
    }
    if (a, b, c) == (192, 0, 0) || (a == 198 && (b == 18 || b == 19)) {
        return Class::Internal("special-purpose");
    }
    if matches!((a, b, c), (192, 0, 2) | (198, 51, 100) | (203, 0, 113)) {
        return Class::Never("documentation");
    }
    Class::Public
}

fn classify_v6(ip: Ipv6Addr) -> Class {
    // An IPv4 address in IPv6 clothes is judged as the IPv4 address it reaches:
    // IPv4-mapped (::ffff:a.b.c.d), IPv4-compatible (::a.b.c.d), NAT64 (64:ff9b::/96).
    if let Some(v4) = ip.to_ipv4_mapped() {
        return classify_v4(v4);
    }
    let segments = ip.segments();
    if segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0] || (segments[..6] == [0; 6] && segments[6] != 0)
    {
        let [_, _, _, _, _, _, hi, lo] = segments;
        return classify_v4(Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo)));
    }
    if ip == Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254) {
        return Class::Never("cloud metadata");
    }
    if ip.is_unspecified() {
        return Class::Never("unspecified");
    }
    if ip.is_multicast() {
        return Class::Never("multicast");
    }
    if ip.is_loopback() {
        return Class::Internal("loopback");
    }
    match segments[0] {
        s if s & 0xfe00 == 0xfc00 => Class::Internal("unique-local"),
        s if s & 0xffc0 == 0xfe80 => Class::Internal("link-local"),
        s if s & 0xffc0 == 0xfec0 => Class::Internal("site-local"),
        0x2001 if segments[1] == 0xdb8 => Class::Never("documentation"),
        _ => Class::Public,
    }
}

/// The DNS resolver of the delivery client: the system's answer, without the addresses
/// the policy refuses; a name left with none fails to connect.
pub struct GuardedResolver(pub Policy);

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.0;
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let found = tokio::net::lookup_host((host.as_str(), 0)).await?;
            let allowed: Vec<SocketAddr> = found
                .filter(|address| policy.address(address.ip()).is_ok())
                .collect();
            if allowed.is_empty() {
                return Err(format!("{host} resolves to no address callbacks may reach").into());
            }
            Ok(Box::new(allowed.into_iter()) as Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STRICT: Policy = Policy {
        allow_http: false,
        allow_private: false,
    };

    #[test]
    fn only_public_https_urls_pass_a_strict_policy() {
        assert!(STRICT.check_literal("https://93.184.215.14/hook").is_ok());
        assert!(
            STRICT
                .check_literal("https://hooks.example.com/x?y=1")
                .is_ok()
        );
        for refused in [
            "http://93.184.215.14/hook",
            "ftp://example.com/",
            "https://user:pw@example.com/",
            "https://example.com/#frag",
            "https://127.0.0.1/",
            "https://10.0.0.1/",
            "https://172.16.0.1/",
            "https://192.168.1.1/",
            "https://169.254.169.254/latest/meta-data",
            "https://169.254.1.1/",
            "https://100.64.0.1/",
            "https://0.0.0.0/",
            "https://224.0.0.1/",
            "https://255.255.255.255/",
            "https://[::1]/",
            "https://[::]/",
            "https://[fd00::1]/",
            "https://[fe80::1]/",
            "https://[ff02::1]/",
            "https://[::ffff:127.0.0.1]/",
            "https://[::ffff:169.254.169.254]/",
            "https://[64:ff9b::a00:1]/",
            "https://[fd00:ec2::254]/",
            "not a url",
        ] {
            assert!(STRICT.check_literal(refused).is_err(), "{refused} passed");
        }
    }

    #[test]
    fn the_operator_may_allow_http_and_private_networks_but_never_metadata() {
        let open = Policy {
            allow_http: true,
            allow_private: true,
        };
        assert!(open.check_literal("http://127.0.0.1:9000/hook").is_ok());
        assert!(open.check_literal("http://[::1]:9000/hook").is_ok());
        assert!(open.check_literal("https://10.1.2.3/").is_ok());
        let metadata = open
            .check_literal("http://169.254.169.254/latest")
            .unwrap_err();
        assert!(metadata.contains("cloud metadata"), "{metadata}");
        assert!(open.check_literal("http://0.0.0.0:80/").is_err());
    }

    #[test]
    fn a_refusal_says_why() {
        let why = STRICT.check_literal("https://10.0.0.1/").unwrap_err();
        assert!(why.contains("private"), "{why}");
        assert!(why.contains("SUBSCRIPTION_ALLOW_PRIVATE_NETWORKS"), "{why}");
        let why = STRICT.check_literal("http://example.com/").unwrap_err();
        assert!(why.contains("https"), "{why}");
    }

    #[tokio::test]
    async fn a_name_that_resolves_to_loopback_is_refused_and_the_resolver_drops_it() {
        let why = STRICT.check("https://localhost:9/hook").await.unwrap_err();
        assert!(why.contains("loopback"), "{why}");
        let resolved = GuardedResolver(STRICT)
            .resolve("localhost".parse().unwrap())
            .await;
        assert!(resolved.is_err());
    }
}
