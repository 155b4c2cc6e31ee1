import pytest

from machines.validation import (
    InvalidInput,
    Keep,
    normalise_extra_data,
    normalise_hostname,
    normalise_ip,
    normalise_mac,
    normalise_mtu,
    normalise_vni,
    normalise_vtep,
    parse_registration,
)


class TestHostname:
    @pytest.mark.parametrize(
        ("raw", "expected"),
        [
            ("web-01", "web-01"),
            ("Web-01.Example.COM", "web-01.example.com"),
            ("a", "a"),
            ("host.example.", "host.example"),
            ("1234", "1234"),
            ("x" * 63, "x" * 63),
            (".".join(["a" * 63] * 3) + "." + "b" * 61, ".".join(["a" * 63] * 3) + "." + "b" * 61),
        ],
    )
    def test_it_accepts_rfc1123_names(self, raw, expected):
        assert normalise_hostname(raw) == expected

    @pytest.mark.parametrize(
        "raw",
        [
            "",
            "   ",
            None,
            42,
            "x" * 64,
            ".".join(["a" * 63] * 4) + ".b",  # 254 characters
            "-web",
            "web-",
            "a..b",
            "web_01",
            "wéb",
            "ウェブ",
            "web 01",
            "web;rm -rf /",
            "<script>alert(1)</script>",
            "web'--",
            "a\x00b",
        ],
    )
    def test_it_rejects_bad_names(self, raw):
        with pytest.raises(ValueError):
            normalise_hostname(raw)


class TestMac:
    @pytest.mark.parametrize(
        "raw", ["aa:bb:cc:dd:ee:f0", "AA:BB:CC:DD:EE:F0", "AA-BB-CC-DD-EE-F0", "aabb.ccdd.eef0", "AABB.CCDD.EEF0"]
    )
    def test_it_accepts_each_form_and_stores_lowercase_colons(self, raw):
        assert normalise_mac(raw) == "aa:bb:cc:dd:ee:f0"

    @pytest.mark.parametrize(
        "raw",
        [
            "00:00:00:00:00:00",
            "ff:ff:ff:ff:ff:ff",
            "01:00:5e:00:00:01",  # multicast bit set
            "aa:bb:cc:dd:ee",
            "aa:bb:cc:dd:ee:ff:00",
            "aa:bb-cc:dd:ee:ff",
            "aabbccddeeff",
            "gg:bb:cc:dd:ee:ff",
            "",
            None,
            12,
            "ａａ:bb:cc:dd:ee:f0",  # full-width letters
        ],
    )
    def test_it_rejects_bad_macs(self, raw):
        with pytest.raises(ValueError):
            normalise_mac(raw)


class TestIp:
    @pytest.mark.parametrize(
        ("raw", "expected"),
        [
            ("10.0.0.1", "10.0.0.1"),
            ("2001:DB8::1", "2001:db8::1"),
            ("2001:0db8:0000:0000:0000:0000:0000:0001", "2001:db8::1"),
            ("::ffff:10.0.0.1", "10.0.0.1"),
            ("FD00:0:0::7", "fd00::7"),
        ],
    )
    def test_it_normalises(self, raw, expected):
        assert normalise_ip(raw) == expected

    @pytest.mark.parametrize(
        "raw", ["", "10.0.0", "10.0.0.256", "010.0.0.1", "0.0.0.0", "::", "224.0.0.1", "ff02::1", "host", "1" * 60]
    )
    def test_it_rejects_bad_addresses(self, raw):
        with pytest.raises(ValueError):
            normalise_ip(raw)


class TestUnderlay:
    @pytest.mark.parametrize(
        ("raw", "expected"),
        [
            ("192.0.2.5", "192.0.2.5"),
            ("127.0.0.1", "127.0.0.1"),
            ("169.254.0.9", "169.254.0.9"),
            ("::ffff:192.0.2.5", "192.0.2.5"),
            ("2001:0DB8::5", "2001:db8::5"),
            (None, None),
        ],
    )
    def test_a_vtep_is_normalised_whatever_the_overlay_policy(self, raw, expected, settings):
        settings.ALLOWED_PREFIXES = []
        assert normalise_vtep(raw) == expected

    @pytest.mark.parametrize("raw", ["", "0.0.0.0", "::", "239.1.1.1", "ff05::2", "fe80::1%eth0", "vtep", 5, []])
    def test_a_vtep_is_a_unicast_address(self, raw):
        with pytest.raises(ValueError):
            normalise_vtep(raw)

    @pytest.mark.parametrize("raw", [68, 1450, 9000, 65535, None])
    def test_it_accepts_mtus_in_range(self, raw):
        assert normalise_mtu(raw) == raw

    @pytest.mark.parametrize("raw", [0, 67, 65536, -1500, "1500", 1500.0, True])
    def test_it_rejects_bad_mtus(self, raw):
        with pytest.raises(ValueError, match="MTU"):
            normalise_mtu(raw)

    def test_absent_fields_are_kept_and_null_clears(self):
        base = {"hostname": "a", "mac_address": "02:00:00:00:00:01"}
        absent = parse_registration("10.0.0.1", base)
        assert (absent.vtep, absent.mtu) == (Keep.KEEP, Keep.KEEP)
        nulls = parse_registration("10.0.0.1", {**base, "vtep": None, "mtu": None})
        assert (nulls.vtep, nulls.mtu) == (None, None)


class TestVniAndExtra:
    @pytest.mark.parametrize("raw", [0, 1, 100, 16777215, None])
    def test_it_accepts_vnis_in_range(self, raw):
        assert normalise_vni(raw) == raw

    @pytest.mark.parametrize("raw", [-1, 16777216, "100", 1.5, True])
    def test_it_rejects_bad_vnis(self, raw):
        with pytest.raises(ValueError):
            normalise_vni(raw)

    def test_it_limits_extra_data_to_4_kib(self):
        assert normalise_extra_data({"k": "x" * 4000}) == {"k": "x" * 4000}
        with pytest.raises(ValueError, match="bytes"):
            normalise_extra_data({"k": "x" * 4100})

    def test_it_counts_unicode_bytes_not_characters(self):
        with pytest.raises(ValueError):
            normalise_extra_data({"k": "日" * 1400})  # 4,200 bytes in UTF-8

    @pytest.mark.parametrize("raw", [[], "text", 3])
    def test_it_requires_an_object(self, raw):
        with pytest.raises(ValueError):
            normalise_extra_data(raw)


def test_parse_registration_names_every_bad_field_at_once():
    with pytest.raises(InvalidInput) as exc:
        parse_registration("10.0.0.1", {"hostname": "-x", "mac_address": "zz", "vni": -1, "extra_data": [], "y": 1,
                                        "vtep": "224.0.0.1", "mtu": 9})
    assert set(exc.value.errors) == {"hostname", "mac_address", "vni", "extra_data", "vtep", "mtu", "body"}


def test_ipv6_zone_ids_are_rejected_with_a_reason():
    with pytest.raises(ValueError, match="zone"):
        normalise_ip("fe80::1%eth0")
