//! Which addresses the fetcher refuses to connect to: every address that is not public
//! (loopback, private, link-local, site-local, cloud metadata, reserved), however it is
//! written, an IPv4 address inside an IPv6 one included (IPv4-mapped, IPv4-compatible, NAT64,
//! 6to4 and Teredo all reach the IPv4 address inside).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// What kind of non-public address `addr` is, or `None` for a public one.
pub(super) fn forbidden_kind(addr: IpAddr) -> Option<&'static str> {
    match addr {
        IpAddr::V4(a) => forbidden_v4(a),
        IpAddr::V6(a) => forbidden_v6(a),
    }
}

/// The IPv4 address in `seg[i]` and `seg[i + 1]`.
fn v4_at(seg: &[u16; 8], i: usize) -> Ipv4Addr {
    Ipv4Addr::from((u32::from(seg[i]) << 16) | u32::from(seg[i + 1]))
}

fn forbidden_v6(a: Ipv6Addr) -> Option<&'static str> {
    if let Some(v4) = a.to_ipv4_mapped() {
        return forbidden_v4(v4);
    }
    let seg = a.segments();
    if a.is_loopback() {
        return Some("loopback");
    } else if a.is_unspecified() {
        return Some("unspecified");
    }
    if seg[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        // NAT64: the IPv4 address inside decides.
        return forbidden_v4(v4_at(&seg, 6));
    }
    if seg[..6] == [0; 6] {
        // IPv4-compatible (`::a.b.c.d`, deprecated but still routed by some stacks).
        return forbidden_v4(v4_at(&seg, 6));
    }
    if seg[0] == 0x2002 {
        // 6to4: the relay reaches the IPv4 address in bits 16..48.
        return forbidden_v4(v4_at(&seg, 1));
    }
    if seg[0] == 0x2001 && seg[1] == 0 {
        // Teredo: the server's IPv4 address, and the client's (inverted) in the last 32 bits.
        let client = Ipv4Addr::from(!((u32::from(seg[6]) << 16) | u32::from(seg[7])));
        return forbidden_v4(v4_at(&seg, 2)).or_else(|| forbidden_v4(client));
    }
    if a.is_multicast() {
        Some("multicast")
    } else if seg[0] & 0xfe00 == 0xfc00 {
        Some("private (unique local)")
    } else if seg[0] & 0xffc0 == 0xfe80 {
        Some("link-local")
    } else if seg[0] & 0xffc0 == 0xfec0 {
        Some("private (site-local)")
    } else if seg[0] == 0x2001 && seg[1] == 0x0db8 {
        Some("documentation")
    } else if a == Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254) {
        Some("cloud metadata")
    } else {
        None
    }
}

fn forbidden_v4(a: Ipv4Addr) -> Option<&'static str> {
    let [b0, b1, b2, _] = a.octets();
    if a == Ipv4Addr::new(169, 254, 169, 254) || a == Ipv4Addr::new(100, 100, 100, 200) {
        Some("cloud metadata")
    } else if a.is_loopback() {
        Some("loopback")
    } else if a.is_private() {
        Some("private")
    } else if a.is_link_local() {
        Some("link-local")
    } else if b0 == 0 {
        Some("unspecified")
    } else if b0 == 100 && (64..128).contains(&b1) {
        Some("shared (carrier-grade NAT)")
    } else if a.is_broadcast() || a.is_multicast() || b0 >= 240 {
        Some("reserved")
    } else if (b0, b1, b2) == (192, 0, 0) || (b0 == 198 && (b1 == 18 || b1 == 19)) {
        Some("special-purpose")
    } else if a.is_documentation() {
        Some("documentation")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(a: &str) -> Option<&'static str> {
        forbidden_kind(a.parse().unwrap())
    }

    #[test]
    fn special_addresses_are_refused() {
        for (addr, expected) in [
            ("127.0.0.1", "loopback"),
            ("10.1.2.3", "private"),
            ("172.16.0.1", "private"),
            ("192.168.1.1", "private"),
            ("169.254.169.254", "cloud metadata"),
            ("169.254.1.1", "link-local"),
            ("0.0.0.0", "unspecified"),
            ("100.64.0.1", "shared (carrier-grade NAT)"),
            ("::1", "loopback"),
            ("::", "unspecified"),
            ("fd00::1", "private (unique local)"),
            ("fe80::1", "link-local"),
            ("::ffff:127.0.0.1", "loopback"),
            ("64:ff9b::a9fe:a9fe", "cloud metadata"),
            ("::127.0.0.1", "loopback"),
            ("::10.0.0.1", "private"),
            ("::169.254.169.254", "cloud metadata"),
            ("2002:7f00:1::", "loopback"),
            ("2002:c0a8:101::1", "private"),
            ("2002:a9fe:a9fe::", "cloud metadata"),
            ("2001:0:7f00:1::", "loopback"),
            ("2001:0:4136:e378:8000:63bf:f5ff:fffe", "private"),
            ("fec0::1", "private (site-local)"),
            ("feff::1", "private (site-local)"),
        ] {
            assert_eq!(kind(addr), Some(expected), "{addr}");
        }
        for public in ["93.184.216.34", "1.1.1.1", "2606:4700::1111", "172.32.0.1"] {
            assert_eq!(kind(public), None, "{public}");
        }
    }

    proptest::proptest! {
        /// An IPv4 address is judged the same however it is written: plain, IPv4-mapped IPv6
        /// or NAT64.
        #[test]
        fn ipv4_in_ipv6_forms_is_judged_as_ipv4(bits: u32) {
            let v4 = Ipv4Addr::from(bits);
            let mapped = IpAddr::V6(v4.to_ipv6_mapped());
            let [a, b, c, d] = v4.octets();
            let nat64 = IpAddr::V6(Ipv6Addr::new(
                0x64, 0xff9b, 0, 0, 0, 0,
                u16::from_be_bytes([a, b]), u16::from_be_bytes([c, d]),
            ));
            let expected = forbidden_kind(IpAddr::V4(v4));
            proptest::prop_assert_eq!(forbidden_kind(mapped), expected);
            proptest::prop_assert_eq!(forbidden_kind(nat64), expected);
        }


        /// The same through IPv4-compatible and 6to4 addresses.
        #[test]
        fn ipv4_in_compatible_and_6to4_forms_is_judged_as_ipv4(bits in 2u32..) {
            let v4 = Ipv4Addr::from(bits);
            let [a, b, c, d] = v4.octets();
            let (hi, lo) = (u16::from_be_bytes([a, b]), u16::from_be_bytes([c, d]));
            let compatible = IpAddr::V6(Ipv6Addr::new(0, 0, 0, 0, 0, 0, hi, lo));
            let six_to_four = IpAddr::V6(Ipv6Addr::new(0x2002, hi, lo, 0, 0, 0, 0, 1));
            let expected = forbidden_kind(IpAddr::V4(v4));
            proptest::prop_assert_eq!(forbidden_kind(compatible), expected);
            proptest::prop_assert_eq!(forbidden_kind(six_to_four), expected);
        }
    }
}
