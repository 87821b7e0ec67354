//! `ip-allow` and `ip-deny`: who may call, by the client's address (CIDR blocks). Behind a
//! load balancer, `trusted_proxies` names the proxies whose `X-Forwarded-For` is believed:
//! the client is then the rightmost address in it that is not one of them (the leftmost ones
//! are the client's to forge).

use std::net::IpAddr;

use ipnet::IpNet;
use serde::Deserialize;

use crate::{Filter, FilterError};

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct IpSpec {
    /// Addresses or CIDR blocks (`10.0.0.0/8`, `2001:db8::/32`, `192.0.2.7`).
    pub cidrs: Vec<String>,
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
}

fn nets(list: &[String], what: &str) -> Result<Vec<IpNet>, FilterError> {
    list.iter()
        .map(|text| {
            text.parse::<IpNet>()
                .or_else(|_| text.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| {
                    FilterError::InvalidOption(format!(
                        "{what}: {text:?} is not an address or CIDR block"
                    ))
                })
        })
        .collect()
}

impl IpSpec {
    pub fn build(&self, allow: bool) -> Result<IpFilter, FilterError> {
        if self.cidrs.is_empty() {
            return Err(FilterError::InvalidOption(
                "cidrs: name at least one block".into(),
            ));
        }
        Ok(IpFilter {
            nets: nets(&self.cidrs, "cidrs")?,
            trusted: nets(&self.trusted_proxies, "trusted_proxies")?,
            allow,
        })
    }
}

#[derive(Debug)]
pub struct IpFilter {
    nets: Vec<IpNet>,
    trusted: Vec<IpNet>,
    /// `ip-allow`: only these; `ip-deny`: all but these.
    allow: bool,
}

impl IpFilter {
    /// The client: the peer, or behind trusted proxies the rightmost untrusted address of
    /// `X-Forwarded-For`.
    fn client(&self, peer: IpAddr, forwarded_for: Option<&str>) -> IpAddr {
        let trusted = |ip: &IpAddr| self.trusted.iter().any(|n| n.contains(ip));
        if !trusted(&peer) {
            return peer;
        }
        let Some(chain) = forwarded_for else {
            return peer;
        };
        chain
            .rsplit(',')
            .filter_map(|hop| hop.trim().parse::<IpAddr>().ok())
            .find(|ip| !trusted(ip))
            .unwrap_or(peer)
    }
}

impl Filter for IpFilter {
    fn checks_client(&self) -> bool {
        true
    }

    fn on_client(&self, peer: IpAddr, forwarded_for: Option<&str>) -> Result<(), FilterError> {
        let client = self.client(peer, forwarded_for);
        // An IPv4 client on a dual-stack socket arrives as ::ffff:a.b.c.d.
        let client = match client {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(client, IpAddr::V4),
            v4 => v4,
        };
        let listed = self.nets.iter().any(|n| n.contains(&client));
        if listed == self.allow {
            Ok(())
        } else {
            Err(FilterError::AddressDenied)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(yaml: &str, allow: bool) -> IpFilter {
        serde_yaml::from_str::<IpSpec>(yaml)
            .map_err(|e| e.to_string())
            .and_then(|s| s.build(allow).map_err(|e| e.to_string()))
            .unwrap_or_else(|e| unreachable!("{e}"))
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap_or_else(|_| unreachable!("{text}"))
    }

    #[test]
    fn allow_and_deny_by_block_through_trusted_proxies_only() {
        let allow = filter(
            "cidrs: [10.0.0.0/8, '2001:db8::/32']\ntrusted_proxies: [192.0.2.1]",
            true,
        );
        assert!(allow.on_client(ip("10.1.2.3"), None).is_ok());
        assert!(allow.on_client(ip("::ffff:10.1.2.3"), None).is_ok());
        assert!(allow.on_client(ip("2001:db8::1"), None).is_ok());
        assert!(allow.on_client(ip("203.0.113.9"), None).is_err());
        // Behind the trusted proxy: the rightmost untrusted hop, not a forged leftmost one.
        assert!(allow
            .on_client(ip("192.0.2.1"), Some("10.9.9.9, 203.0.113.9"))
            .is_err());
        assert!(allow
            .on_client(ip("192.0.2.1"), Some("203.0.113.9, 10.9.9.9"))
            .is_ok());
        // An untrusted peer's X-Forwarded-For counts for nothing.
        assert!(allow
            .on_client(ip("203.0.113.9"), Some("10.9.9.9"))
            .is_err());
        let deny = filter("cidrs: [203.0.113.0/24]", false);
        assert!(deny.on_client(ip("203.0.113.9"), None).is_err());
        assert!(deny.on_client(ip("10.1.2.3"), None).is_ok());
    }

    #[test]
    fn a_malformed_block_fails_the_config() {
        let err = serde_yaml::from_str::<IpSpec>("cidrs: [10.0.0.0/33]")
            .unwrap_or_else(|e| unreachable!("{e}"))
            .build(true)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("not an address or CIDR block"), "{err}");
    }
}
