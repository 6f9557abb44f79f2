//! Where budget alerts may be POSTed: the URL rules (http or https, no user
//! name or password) and which IP addresses a webhook may reach.
//!
//! Whoever can create a budget chooses its webhook URLs, and Tally POSTs to
//! them from inside the operator's network. Without these rules a budget
//! could make the server reach the cloud metadata service (and its
//! credentials), Tally's own admin API on loopback, or any private host.
//! Checks here are pure; `webhook` applies them to each delivery attempt, to
//! the addresses the name resolves to at that moment.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use reqwest::Url;

/// The config key that lets webhooks reach loopback and private networks.
pub const ALLOW_PRIVATE_KEY: &str = "alerts.allow_private_targets";

/// Why an address may not receive webhooks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forbidden {
    /// A cloud instance metadata service: it hands out the host's credentials.
    Metadata,
    /// 169.254.0.0/16, fe80::/10: never a webhook receiver, and where
    /// metadata and other host services live.
    LinkLocal,
    /// 0.0.0.0/8 and `::`: connecting to them reaches the local host.
    Unspecified,
    Multicast,
    Broadcast,
    /// 240.0.0.0/4, reserved for future use.
    Reserved,
    /// 127.0.0.0/8, `::1`.
    Loopback,
    /// 10/8, 172.16/12, 192.168/16.
    Private,
    /// 100.64.0.0/10, carrier-grade NAT.
    SharedAddressSpace,
    /// fc00::/7.
    UniqueLocal,
    /// fec0::/10 (deprecated, still routed inside some networks).
    SiteLocal,
}

impl Forbidden {
    /// Whether `alerts.allow_private_targets` lifts the refusal: loopback and
    /// private networks are where an operator's own receivers may run;
    /// metadata, link-local and the rest never are.
    pub fn is_private(self) -> bool {
        matches!(
            self,
            Forbidden::Loopback
                | Forbidden::Private
                | Forbidden::SharedAddressSpace
                | Forbidden::UniqueLocal
                | Forbidden::SiteLocal
        )
    }

    fn what(self) -> &'static str {
        match self {
            Forbidden::Metadata => "a cloud metadata address",
            Forbidden::LinkLocal => "a link-local address",
            Forbidden::Unspecified => "an unspecified address",
            Forbidden::Multicast => "a multicast address",
            Forbidden::Broadcast => "the broadcast address",
            Forbidden::Reserved => "a reserved address",
            Forbidden::Loopback => "a loopback address",
            Forbidden::Private => "a private address",
            Forbidden::SharedAddressSpace => "a carrier-grade NAT address",
            Forbidden::UniqueLocal => "a unique local (private) address",
            Forbidden::SiteLocal => "a site-local (private) address",
        }
    }

    /// `127.0.0.1 is a loopback address; …` with what, if anything, allows it.
    pub fn explain(self, ip: IpAddr) -> String {
        if self.is_private() {
            format!(
                "{ip} is {}; webhooks may reach it only when {ALLOW_PRIVATE_KEY} is set",
                self.what()
            )
        } else {
            format!("{ip} is {}; webhooks may never reach it", self.what())
        }
    }
}

/// Cloud metadata services (AWS, GCP, Azure, Oracle, OpenStack,
/// DigitalOcean; AWS ECS task metadata; Alibaba Cloud). Named apart from
/// their ranges because 100.100.100.200 and fd00:ec2::254 sit in ranges that
/// `allow_private_targets` would otherwise open.
const METADATA_V4: [Ipv4Addr; 3] = [
    Ipv4Addr::new(169, 254, 169, 254),
    Ipv4Addr::new(169, 254, 170, 2),
    Ipv4Addr::new(100, 100, 100, 200),
];
const METADATA_V6: [Ipv6Addr; 1] = [Ipv6Addr::new(0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x0254)];

/// What keeps `ip` from receiving webhooks, if anything. IPv6 forms that
/// carry an IPv4 address (mapped `::ffff:a.b.c.d`, compatible `::a.b.c.d`,
/// NAT64 `64:ff9b::a.b.c.d`) are judged by that address.
pub fn classify(ip: IpAddr) -> Option<Forbidden> {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

fn classify_v4(ip: Ipv4Addr) -> Option<Forbidden> {
    let [a, b, _, _] = ip.octets();
    if METADATA_V4.contains(&ip) {
        Some(Forbidden::Metadata)
    } else if a == 0 {
        Some(Forbidden::Unspecified)
    } else if a == 127 {
        Some(Forbidden::Loopback)
    } else if a == 169 && b == 254 {
        Some(Forbidden::LinkLocal)
    } else if a == 10 || (a == 172 && (16..32).contains(&b)) || (a == 192 && b == 168) {
        Some(Forbidden::Private)
    } else if a == 100 && (64..128).contains(&b) {
        Some(Forbidden::SharedAddressSpace)
    } else if ip == Ipv4Addr::BROADCAST {
        Some(Forbidden::Broadcast)
    } else if (224..240).contains(&a) {
        Some(Forbidden::Multicast)
    } else if a >= 240 {
        Some(Forbidden::Reserved)
    } else {
        None
    }
}

fn classify_v6(ip: Ipv6Addr) -> Option<Forbidden> {
    let s = ip.segments();
    if METADATA_V6.contains(&ip) {
        return Some(Forbidden::Metadata);
    }
    if ip.is_unspecified() {
        return Some(Forbidden::Unspecified);
    }
    if ip.is_loopback() {
        return Some(Forbidden::Loopback);
    }
    let embedded =
        |s: &[u16; 8]| Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    // ::ffff:0:0/96 (mapped) and ::/96 (compatible): the socket reaches the
    // IPv4 address. 64:ff9b::/96: a NAT64 gateway may forward to it.
    let mapped_or_compatible = s[..5] == [0; 5] && (s[5] == 0xffff || s[5] == 0);
    let nat64 = s[..6] == [0x64, 0xff9b, 0, 0, 0, 0];
    if mapped_or_compatible || nat64 {
        return classify_v4(embedded(&s));
    }
    match s[0] {
        x if x & 0xffc0 == 0xfe80 => Some(Forbidden::LinkLocal),
        x if x & 0xff00 == 0xff00 => Some(Forbidden::Multicast),
        x if x & 0xfe00 == 0xfc00 => Some(Forbidden::UniqueLocal),
        x if x & 0xffc0 == 0xfec0 => Some(Forbidden::SiteLocal),
        _ => None,
    }
}

/// Whether `ip` may receive webhooks.
pub fn check_ip(ip: IpAddr, allow_private: bool) -> Result<(), Forbidden> {
    match classify(ip) {
        Some(why) if !(allow_private && why.is_private()) => Err(why),
        _ => Ok(()),
    }
}

/// A webhook URL that cannot be used, and why.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TargetError {
    #[error("{url:?} is not a URL: {reason}")]
    NotUrl { url: String, reason: String },
    #[error("scheme {0:?} is not allowed: webhooks must be http or https URLs")]
    Scheme(String),
    #[error("must not carry a user name or password")]
    Userinfo,
    #[error("has no host")]
    NoHost,
    #[error("{}", why.explain(*ip))]
    Address { ip: IpAddr, why: Forbidden },
    #[error("{host} resolves to no address webhooks may reach: {}", list_refused(refused))]
    Resolved { host: String, refused: Vec<(IpAddr, Forbidden)> },
}

fn list_refused(refused: &[(IpAddr, Forbidden)]) -> String {
    let parts: Vec<String> = refused.iter().map(|(ip, why)| why.explain(*ip)).collect();
    parts.join("; ")
}

/// Where a checked URL points: an address, or a name still to resolve.
#[derive(Debug, Clone, PartialEq)]
pub enum Destination {
    Address(SocketAddr),
    Name { host: String, port: u16 },
}

/// A webhook URL that passed every check that can be made without DNS.
#[derive(Debug, Clone)]
pub struct Target {
    pub url: Url,
    pub destination: Destination,
}

/// Checks a webhook URL: http or https, no user name or password, and a
/// literal IP address only if it may be reached. A name's addresses are
/// known only when it is resolved (`allowed_addresses`).
pub fn check_url(raw: &str, allow_private: bool) -> Result<Target, TargetError> {
    let url = Url::parse(raw)
        .map_err(|e| TargetError::NotUrl { url: raw.to_owned(), reason: e.to_string() })?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(TargetError::Scheme(url.scheme().to_owned()));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(TargetError::Userinfo);
    }
    let port = url.port_or_known_default().expect("http and https have default ports");
    let host = url.host_str().ok_or(TargetError::NoHost)?;
    // The URL parser has already turned every spelling of an IPv4 address
    // (`2130706433`, `0x7f.1`) into dotted form; IPv6 ones come bracketed.
    let literal = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    let destination = match literal.parse::<IpAddr>() {
        Ok(ip) => Destination::Address(SocketAddr::new(ip, port)),
        Err(_) => Destination::Name { host: host.to_owned(), port },
    };
    if let Destination::Address(addr) = destination {
        check_ip(addr.ip(), allow_private)
            .map_err(|why| TargetError::Address { ip: addr.ip(), why })?;
    }
    Ok(Target { url, destination })
}

/// Of the addresses `host` resolved to, those webhooks may reach; an error
/// naming each refused one when none may.
pub fn allowed_addresses(
    host: &str,
    resolved: impl IntoIterator<Item = SocketAddr>,
    allow_private: bool,
) -> Result<Vec<SocketAddr>, TargetError> {
    let mut allowed = Vec::new();
    let mut refused = Vec::new();
    for addr in resolved {
        match check_ip(addr.ip(), allow_private) {
            Ok(()) => allowed.push(addr),
            Err(why) => refused.push((addr.ip(), why)),
        }
    }
    if allowed.is_empty() {
        return Err(TargetError::Resolved { host: host.to_owned(), refused });
    }
    Ok(allowed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(ip: &str) -> Option<Forbidden> {
        classify(ip.parse().unwrap())
    }

    #[test]
    fn ipv4_ranges_and_their_edges() {
        use Forbidden::*;
        let cases = [
            ("0.0.0.0", Some(Unspecified)),
            ("0.255.255.255", Some(Unspecified)),
            ("1.0.0.0", None),
            ("9.255.255.255", None),
            ("10.0.0.0", Some(Private)),
            ("10.255.255.255", Some(Private)),
            ("11.0.0.0", None),
            ("100.63.255.255", None),
            ("100.64.0.0", Some(SharedAddressSpace)),
            ("100.127.255.255", Some(SharedAddressSpace)),
            ("100.128.0.0", None),
            ("100.100.100.200", Some(Metadata)),
            ("126.255.255.255", None),
            ("127.0.0.0", Some(Loopback)),
            ("127.0.0.1", Some(Loopback)),
            ("127.255.255.255", Some(Loopback)),
            ("128.0.0.0", None),
            ("169.253.255.255", None),
            ("169.254.0.0", Some(LinkLocal)),
            ("169.254.169.254", Some(Metadata)),
            ("169.254.170.2", Some(Metadata)),
            ("169.254.255.255", Some(LinkLocal)),
            ("169.255.0.0", None),
            ("172.15.255.255", None),
            ("172.16.0.0", Some(Private)),
            ("172.31.255.255", Some(Private)),
            ("172.32.0.0", None),
            ("192.167.255.255", None),
            ("192.168.0.0", Some(Private)),
            ("192.168.255.255", Some(Private)),
            ("192.169.0.0", None),
            ("8.8.8.8", None),
            ("223.255.255.255", None),
            ("224.0.0.0", Some(Multicast)),
            ("239.255.255.255", Some(Multicast)),
            ("240.0.0.0", Some(Reserved)),
            ("255.255.255.254", Some(Reserved)),
            ("255.255.255.255", Some(Broadcast)),
        ];
        for (ip, want) in cases {
            assert_eq!(class(ip), want, "{ip}");
        }
    }

    #[test]
    fn ipv6_ranges_and_their_edges() {
        use Forbidden::*;
        let cases = [
            ("::", Some(Unspecified)),
            ("::1", Some(Loopback)),
            ("::2", Some(Unspecified)), // compatible form of 0.0.0.2
            ("fd00:ec2::254", Some(Metadata)),
            ("fd00:ec2::253", Some(UniqueLocal)),
            ("fbff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", None),
            ("fc00::", Some(UniqueLocal)),
            ("fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", Some(UniqueLocal)),
            ("fe00::", None),
            ("fe7f:ffff:ffff:ffff:ffff:ffff:ffff:ffff", None),
            ("fe80::", Some(LinkLocal)),
            ("fe80::1", Some(LinkLocal)),
            ("febf:ffff:ffff:ffff:ffff:ffff:ffff:ffff", Some(LinkLocal)),
            ("fec0::", Some(SiteLocal)),
            ("feff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", Some(SiteLocal)),
            ("ff00::", Some(Multicast)),
            ("ff02::1", Some(Multicast)),
            ("2001:4860:4860::8888", None),
            ("2606:4700::1111", None),
            ("::1:0:0:1", None),
        ];
        for (ip, want) in cases {
            assert_eq!(class(ip), want, "{ip}");
        }
    }

    #[test]
    fn ipv6_forms_of_ipv4_addresses_are_judged_as_ipv4() {
        use Forbidden::*;
        for prefix in ["::ffff:", "::", "64:ff9b::"] {
            for (v4, want) in [
                ("127.0.0.1", Some(Loopback)),
                ("169.254.169.254", Some(Metadata)),
                ("169.254.1.1", Some(LinkLocal)),
                ("10.1.2.3", Some(Private)),
                ("172.16.0.1", Some(Private)),
                ("192.168.1.1", Some(Private)),
                ("100.64.0.1", Some(SharedAddressSpace)),
                ("100.100.100.200", Some(Metadata)),
                ("0.0.0.0", Some(Unspecified)),
                ("224.0.0.1", Some(Multicast)),
                ("255.255.255.255", Some(Broadcast)),
                ("8.8.8.8", None),
            ] {
                let ip = format!("{prefix}{v4}");
                // `::0.0.0.0` is `::` itself.
                let want = if ip == "::0.0.0.0" { Some(Unspecified) } else { want };
                assert_eq!(class(&ip), want, "{ip}");
            }
        }
        // Outside the NAT64 well-known prefix the same bits mean nothing.
        assert_eq!(class("64:ff9c::7f00:1"), None);
    }

    #[test]
    fn private_targets_open_only_private_ranges() {
        for ip in [
            "127.0.0.1",
            "::1",
            "10.0.0.1",
            "172.20.0.1",
            "192.168.0.1",
            "100.64.0.1",
            "fc00::1",
            "::ffff:127.0.0.1",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            assert!(check_ip(ip, false).is_err(), "{ip}");
            assert!(check_ip(ip, true).is_ok(), "{ip}");
        }
        for ip in [
            "169.254.169.254",
            "169.254.1.1",
            "fe80::1",
            "fd00:ec2::254",
            "100.100.100.200",
            "0.0.0.0",
            "::",
            "224.0.0.1",
            "ff02::1",
            "255.255.255.255",
            "::ffff:169.254.169.254",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            assert!(check_ip(ip, true).is_err(), "{ip}");
        }
        assert!(check_ip("93.184.216.34".parse().unwrap(), false).is_ok());
    }

    #[test]
    fn urls_are_checked_before_any_lookup() {
        let err = |url: &str| check_url(url, false).unwrap_err().to_string();
        assert_eq!(
            err("ftp://example.com/x"),
            "scheme \"ftp\" is not allowed: webhooks must be http or https URLs"
        );
        assert_eq!(
            err("file:///etc/passwd"),
            "scheme \"file\" is not allowed: webhooks must be http or https URLs"
        );
        assert_eq!(err("http://user:pass@example.com/"), "must not carry a user name or password");
        assert_eq!(err("http://user@example.com/"), "must not carry a user name or password");
        assert!(
            err("http://169.254.169.254/latest")
                .contains("cloud metadata address; webhooks may never")
        );
        assert!(err("http://127.0.0.1:9/").contains(ALLOW_PRIVATE_KEY));
        assert!(err("not a url").contains("is not a URL"));
        // Spellings the URL parser normalizes to a loopback address.
        for url in
            ["http://2130706433/", "http://0x7f.1/", "http://[::ffff:7f00:1]/", "http://127.1/"]
        {
            assert!(err(url).contains("loopback"), "{url}");
        }
        assert!(check_url("http://127.0.0.1:9/", true).is_ok());
        let t = check_url("https://Hooks.Example.com/a?b=c", false).unwrap();
        assert_eq!(
            t.destination,
            Destination::Name { host: "hooks.example.com".into(), port: 443 }
        );
        let t = check_url("http://[2606:4700::1111]:8080/", false).unwrap();
        assert_eq!(t.destination, Destination::Address("[2606:4700::1111]:8080".parse().unwrap()));
    }

    #[test]
    fn resolved_addresses_are_filtered_and_refusals_named() {
        let addrs: Vec<SocketAddr> = ["127.0.0.1:80", "93.184.216.34:80", "[::1]:80"]
            .iter()
            .map(|a| a.parse().unwrap())
            .collect();
        assert_eq!(allowed_addresses("h", addrs.clone(), false).unwrap(), [addrs[1]]);
        assert_eq!(allowed_addresses("h", addrs.clone(), true).unwrap(), addrs);
        let err = allowed_addresses("localhost", [addrs[0], addrs[2]], false).unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("localhost resolves to no address webhooks may reach"), "{text}");
        assert!(
            text.contains("127.0.0.1 is a loopback address") && text.contains("::1 is a loopback"),
            "{text}"
        );
        assert!(allowed_addresses("h", [], true).is_err());
    }
}
