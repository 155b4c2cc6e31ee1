#!/bin/sh
# register-machine.sh — register this host with vxlanmgr (PUT /api/machines/{ip}).
#
# Portable POSIX sh: runs under dash, bash and busybox ash on any Linux host (Debian, Alpine, ...).
# Installed as /usr/local/sbin/vxlanmgr-register and run by a systemd timer (see docs/deployment.md).
#
# What it sends, and where each value comes from (a flag always wins):
#   hostname     --hostname, else `hostname -f`, `hostname`, `uname -n`, /etc/hostname
#   interface    --interface, else VXLANMGR_INTERFACE (environment, then config file),
#                else the first link of type vxlan (`ip -d link show type vxlan`,
#                falling back to DEVTYPE=vxlan in /sys/class/net/*/uevent)
#   ip address   --ip, else the first global IPv4 address of the interface
#   mac address  --mac, else /sys/class/net/IF/address (or `ip link show dev IF`)
#   vni          --vni, else `vxlan id N` from `ip -d link show dev IF`; none for a non-vxlan interface
#   vtep         --vtep, else VXLANMGR_VTEP (environment, then config file), else the link's
#                underlay tunnel endpoint: `local A` from `ip -d link show dev IF`, or without one
#                the source address of the route to its `remote` (or `group`) address
#   mtu          --mtu, else VXLANMGR_MTU (environment, then config file), else
#                /sys/class/net/IF/mtu (or `mtu N` of `ip link show dev IF`)
#   extra_data   --extra-json '{"rack": "r1"}' (a JSON object; omitted when not given)
#
# vtep and mtu are sent for a vxlan interface only, and left out when they cannot be read (busybox
# ip shows no `local`: pass --vtep); the server then keeps what an earlier registration reported.
# `--vtep none` / `--mtu none` send null, which clears them.
#
# URL and token: --url/--token, else the environment (VXLANMGR_URL, VXLANMGR_TOKEN), else the
# config file (--config FILE, default /etc/vxlanmgr/register.conf). The file holds KEY=VALUE
# lines (VXLANMGR_URL=, VXLANMGR_TOKEN=, VXLANMGR_INTERFACE=, VXLANMGR_VTEP=, VXLANMGR_MTU=);
# it is parsed, never sourced.
# Prefer the file (mode 0600) or the environment over --token: arguments are visible in `ps`.
# The token is handed to curl on stdin (to wget in a private temporary file), never as an argument.
#
# Retries: network errors, HTTP 429, 502, 503 and 504 are retried up to --max-attempts times
# (default 6) with jittered exponential backoff. With base B = VXLANMGR_RETRY_BASE seconds
# (default 2) the n-th wait is drawn from [D/2, D] where D = min(B * 2^(n-1), 30 * B), i.e.
# 1-2, 2-4, 4-8, 8-16, 16-32 s by default and never more than 60 s. A Retry-After header (whole
# seconds) is honoured as a minimum wait (plus up to B of jitter) as long as it is at most 30 * B;
# a longer one (the server sends 300 when its machine limit is reached) is capped at 30 * B.
# VXLANMGR_RETRY_BASE scales the whole schedule, which is how tests make it fast.
#
# Exit codes:
#   0  registered (or --dry-run printed the request)
#   1  usage or configuration error (bad flag, no URL or token, no curl, unusable URL, TLS setup)
#   2  detection error (no vxlan interface, no IPv4 address, no MAC address, unreadable VNI)
#   3  rejected by the server (400, 401, 403, 413, 415, 500, ...); its message is printed
#   4  gave up: still a network error, 429 or 503 after the last attempt
#
# Other environment knobs: VXLANMGR_HTTP_CLIENT=curl|wget forces the HTTP client (default: curl,
# else GNU wget 1.15+; busybox wget cannot send PUT).

set -u

PROG=${0##*/}
DEFAULT_CONFIG=/etc/vxlanmgr/register.conf
USER_AGENT="vxlanmgr-register/1"

usage() {
    cat <<EOF
Usage: $PROG [options]

Register this host with vxlanmgr: PUT {url}/api/machines/{ip} with its host name,
VXLAN interface address, MAC address, VNI, VTEP address and MTU.

Options:
  --url URL            vxlanmgr base URL, e.g. https://vxlanmgr.example.com  [VXLANMGR_URL]
  --token TOKEN        bearer token (prefer the config file: arguments show in ps)  [VXLANMGR_TOKEN]
  --config FILE        KEY=VALUE config file (default $DEFAULT_CONFIG)
  --interface NAME     interface to register (default: first vxlan link)  [VXLANMGR_INTERFACE]
  --hostname NAME      host name to send (default: hostname -f)
  --ip ADDRESS         IPv4 address to send (default: first global IPv4 of the interface)
  --mac MAC            MAC address to send (default: the interface's)
  --vni N              VNI to send (default: the vxlan id of the interface)
  --vtep ADDRESS       underlay VTEP address to send, or none (default: the vxlan link's
                       local address)  [VXLANMGR_VTEP]
  --mtu N              MTU to send, or none (default: the vxlan link's)  [VXLANMGR_MTU]
  --extra-json JSON    extra_data to send, a JSON object such as '{"rack":"r1"}'
  --max-attempts N     attempts before giving up on network errors, 429 and 503 (default 6)
  --timeout S          seconds allowed for each HTTP request (default 20)
  --dry-run            print the request (token masked) and exit without sending it
  -h, --help           show this help

Exit codes: 0 ok, 1 usage/config error, 2 detection error, 3 rejected by the server,
4 gave up after retries.
EOF
}

say() { printf '%s\n' "$*" >&2; }
die() {
    # die CODE MESSAGE — one line on stderr, then exit.
    _code=$1
    shift
    printf '%s: error: %s\n' "$PROG" "$*" >&2
    exit "$_code"
}
warn() { printf '%s: warning: %s\n' "$PROG" "$*" >&2; }

is_uint() {
    case $1 in
    '' | *[!0-9]*) return 1 ;;
    esac
    return 0
}

is_number() {
    # A non-negative decimal such as 2, 0.1 or 1.5.
    case $1 in
    '' | '.' | *[!0-9.]* | *.*.*) return 1 ;;
    esac
    return 0
}

# ---------------------------------------------------------------- JSON helpers

json_str() {
    # The JSON string literal for $1: quotes, backslashes and control characters escaped.
    printf '%s' "$1" | LC_ALL=C awk '
        BEGIN {
            for (c = 1; c < 32; c++) esc[sprintf("%c", c)] = sprintf("\\u%04x", c)
            esc["\t"] = "\\t"; esc["\r"] = "\\r"; esc["\b"] = "\\b"; esc["\f"] = "\\f"
            esc["\\"] = "\\\\"; esc["\""] = "\\\""
        }
        {
            if (NR > 1) out = out "\\n"
            n = length($0)
            for (k = 1; k <= n; k++) {
                ch = substr($0, k, 1)
                out = out ((ch in esc) ? esc[ch] : ch)
            }
        }
        END { printf "\"%s\"", out }'
}

# json_flatten: reads one JSON document on stdin and prints one "path<TAB>value" line per scalar,
# paths joined with "." ("errors.hostname.0"); strings are unescaped, newlines become spaces.
# Exits 1 (after printing what it could) when the input is not well-formed JSON.
# shellcheck disable=SC2016 # an awk program: nothing to expand
JSON_FLATTEN_AWK='
function fail() { bad = 1; i = n + 1 }
function ws() { while (i <= n && index(" \t\r\n", substr(buf, i, 1))) i++ }
function hexval(s,   k, v, d) {
    v = 0
    for (k = 1; k <= 4; k++) {
        d = index("0123456789abcdef", tolower(substr(s, k, 1)))
        if (d == 0) { fail(); return 0 }
        v = v * 16 + d - 1
    }
    return v
}
function utf8(c) {
    if (c < 128) return c == 0 ? "" : sprintf("%c", c)
    if (c < 2048) return sprintf("%c%c", 192 + int(c / 64), 128 + c % 64)
    if (c < 65536) return sprintf("%c%c%c", 224 + int(c / 4096), 128 + int(c / 64) % 64, 128 + c % 64)
    return sprintf("%c%c%c%c", 240 + int(c / 262144), 128 + int(c / 4096) % 64, 128 + int(c / 64) % 64, 128 + c % 64)
}
function str(   s, c, e, code, low) {
    if (substr(buf, i, 1) != "\"") { fail(); return "" }
    i++
    s = ""
    while (i <= n) {
        c = substr(buf, i, 1)
        if (c == "\"") { i++; return s }
        if (c == "\\") {
            e = substr(buf, i + 1, 1)
            i += 2
            if (e == "n" || e == "r" || e == "t") s = s " "
            else if (e == "b" || e == "f") s = s
            else if (e == "u") {
                code = hexval(substr(buf, i, 4))
                i += 4
                if (code >= 55296 && code < 56320 && substr(buf, i, 2) == "\\u") {
                    low = hexval(substr(buf, i + 2, 4))
                    if (low >= 56320 && low < 57344) {
                        code = 65536 + (code - 55296) * 1024 + (low - 56320)
                        i += 6
                    }
                }
                s = s utf8(code)
            } else if (e == "\"" || e == "\\" || e == "/") s = s e
            else { fail(); return s }
            continue
        }
        if (c == "\n") c = " "
        s = s c
        i++
    }
    fail()
    return s
}
function emit(path, v) { print path "\t" v }
function value(path,   c, k, idx, v) {
    if (++depth > 64) { fail(); return }
    ws()
    c = substr(buf, i, 1)
    if (c == "{") {
        i++
        ws()
        if (substr(buf, i, 1) == "}") { i++; depth--; return }
        while (i <= n) {
            ws()
            k = str()
            if (bad) return
            ws()
            if (substr(buf, i, 1) != ":") { fail(); return }
            i++
            value(path == "" ? k : path "." k)
            ws()
            c = substr(buf, i, 1)
            i++
            if (c == "}") { depth--; return }
            if (c != ",") { fail(); return }
        }
        fail()
        return
    }
    if (c == "[") {
        i++
        ws()
        if (substr(buf, i, 1) == "]") { i++; depth--; return }
        idx = 0
        while (i <= n) {
            value(path == "" ? idx : path "." idx)
            idx++
            ws()
            c = substr(buf, i, 1)
            i++
            if (c == "]") { depth--; return }
            if (c != ",") { fail(); return }
        }
        fail()
        return
    }
    if (c == "\"") { v = str(); if (!bad) emit(path, v); depth--; return }
    v = ""
    while (i <= n && index(",:{}[]\" \t\r\n", substr(buf, i, 1)) == 0) { v = v substr(buf, i, 1); i++ }
    if (v !~ /^(true|false|null|-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][-+]?[0-9]+)?)$/) { fail(); return }
    emit(path, v)
    depth--
}
{ buf = buf (NR > 1 ? "\n" : "") $0 }
END {
    n = length(buf); i = 1; bad = 0; depth = 0
    value("")
    ws()
    if (i <= n) bad = 1
    exit bad
}'

json_flatten() { LC_ALL=C awk "$JSON_FLATTEN_AWK"; }

# json_get PATH FILE — the value at PATH in the flattened JSON of FILE (empty when absent).
json_get() {
    json_flatten <"$2" 2>/dev/null | awk -F '\t' -v p="$1" '$1 == p { sub(/^[^\t]*\t/, ""); print; exit }'
}

# server_message FILE — a one-line summary of a vxlanmgr error body.
server_message() {
    _flat=$(json_flatten <"$1" 2>/dev/null)
    _msg=$(printf '%s\n' "$_flat" | awk -F '\t' '$1 == "error" { sub(/^[^\t]*\t/, ""); print; exit }')
    if [ -z "$_msg" ]; then
        # 400: {"errors": {"field": ["message", ...]}} becomes "field: message; field: message"
        _msg=$(printf '%s\n' "$_flat" | awk -F '\t' '
            $1 ~ /^errors\./ {
                path = $1; sub(/^errors\./, "", path); sub(/\.[0-9]+$/, "", path)
                line = $0; sub(/^[^\t]*\t/, "", line)
                out = out (out == "" ? "" : "; ") path ": " line
            }
            END { print out }')
    fi
    if [ -z "$_msg" ]; then
        # Not ours (a proxy error page?): the first line of text, tags removed, kept short.
        _msg=$(sed -e 's/<[^>]*>/ /g' -e 's/[[:space:]][[:space:]]*/ /g' -e 's/^ //' -e 's/ $//' "$1" 2>/dev/null |
            awk 'NF { print; exit }' | cut -c1-200)
    fi
    printf '%s' "$_msg"
}

# ---------------------------------------------------------------- arguments and configuration

ARG_URL='' ARG_TOKEN='' ARG_CONFIG='' ARG_INTERFACE='' ARG_HOSTNAME='' ARG_IP='' ARG_MAC='' ARG_VNI=''
ARG_VTEP='' ARG_MTU=''
EXTRA_JSON='' HAVE_EXTRA=0 MAX_ATTEMPTS=6 TIMEOUT=20 DRY_RUN=0

need_value() {
    [ "$2" -ge 2 ] || die 1 "$1 needs a value (see --help)"
}

while [ $# -gt 0 ]; do
    opt=$1
    case $opt in
    --*=*)
        val=${opt#*=}
        opt=${opt%%=*}
        shift
        set -- "$opt" "$val" "$@"
        continue
        ;;
    esac
    case $opt in
    -h | --help)
        usage
        exit 0
        ;;
    --dry-run)
        DRY_RUN=1
        shift
        continue
        ;;
    --url | --token | --config | --interface | --hostname | --ip | --mac | --vni | --vtep | --mtu | --extra-json | --max-attempts | --timeout)
        need_value "$opt" $#
        val=$2
        shift 2
        ;;
    *)
        die 1 "unknown argument '$opt' (see --help)"
        ;;
    esac
    case $opt in
    --url) ARG_URL=$val ;;
    --token) ARG_TOKEN=$val ;;
    --config) ARG_CONFIG=$val ;;
    --interface) ARG_INTERFACE=$val ;;
    --hostname) ARG_HOSTNAME=$val ;;
    --ip) ARG_IP=$val ;;
    --mac) ARG_MAC=$val ;;
    --vni) ARG_VNI=$val ;;
    --vtep) ARG_VTEP=$val ;;
    --mtu) ARG_MTU=$val ;;
    --extra-json)
        EXTRA_JSON=$val
        HAVE_EXTRA=1
        ;;
    --max-attempts) MAX_ATTEMPTS=$val ;;
    --timeout) TIMEOUT=$val ;;
    esac
done

if ! is_uint "$MAX_ATTEMPTS" || [ "$MAX_ATTEMPTS" -lt 1 ] || [ "$MAX_ATTEMPTS" -gt 100 ]; then
    die 1 "--max-attempts must be a whole number from 1 to 100, got '$MAX_ATTEMPTS'"
fi
if ! is_uint "$TIMEOUT" || [ "$TIMEOUT" -lt 1 ] || [ "$TIMEOUT" -gt 3600 ]; then
    die 1 "--timeout must be a whole number of seconds from 1 to 3600, got '$TIMEOUT'"
fi

RETRY_BASE=${VXLANMGR_RETRY_BASE:-2}
is_number "$RETRY_BASE" || die 1 "VXLANMGR_RETRY_BASE must be a number of seconds, got '$RETRY_BASE'"
BASE_MS=$(awk -v v="$RETRY_BASE" 'BEGIN { printf "%d", v * 1000 + 0.5 }')
[ "$BASE_MS" -le 600000 ] || die 1 "VXLANMGR_RETRY_BASE must be at most 600 seconds, got '$RETRY_BASE'"
CAP_MS=$((BASE_MS * 30))

CFG_URL='' CFG_TOKEN='' CFG_INTERFACE='' CFG_VTEP='' CFG_MTU=''

strip_blanks() {
    # Leading and trailing spaces and tabs removed.
    printf '%s' "$1" | sed -e 's/^[[:space:]]*//' -e 's/[[:space:]]*$//'
}

read_config() {
    # KEY=VALUE lines; blank lines and lines starting with # are ignored; a value may be wrapped
    # in matching single or double quotes. Nothing is expanded or executed.
    _file=$1
    _lineno=0
    while IFS= read -r _line || [ -n "$_line" ]; do
        _lineno=$((_lineno + 1))
        _line=$(strip_blanks "$_line")
        case $_line in
        '' | '#'*) continue ;;
        export[[:space:]]*) _line=$(strip_blanks "${_line#export}") ;;
        esac
        case $_line in
        *=*) ;;
        *)
            warn "$_file:$_lineno: ignoring a line without '='"
            continue
            ;;
        esac
        _key=$(strip_blanks "${_line%%=*}")
        _value=$(strip_blanks "${_line#*=}")
        case $_value in
        \"*\")
            _value=${_value#\"}
            _value=${_value%\"}
            ;;
        \'*\')
            _value=${_value#\'}
            _value=${_value%\'}
            ;;
        esac
        case $_key in
        VXLANMGR_URL) CFG_URL=$_value ;;
        VXLANMGR_TOKEN) CFG_TOKEN=$_value ;;
        VXLANMGR_INTERFACE) CFG_INTERFACE=$_value ;;
        VXLANMGR_VTEP) CFG_VTEP=$_value ;;
        VXLANMGR_MTU) CFG_MTU=$_value ;;
        *) warn "$_file:$_lineno: ignoring unknown key '$_key'" ;;
        esac
    done <"$_file"
}

if [ -n "$ARG_CONFIG" ]; then
    if [ ! -f "$ARG_CONFIG" ] || [ ! -r "$ARG_CONFIG" ]; then
        die 1 "cannot read the config file $ARG_CONFIG"
    fi
    CONFIG_FILE=$ARG_CONFIG
else
    CONFIG_FILE=$DEFAULT_CONFIG
fi
if [ -f "$CONFIG_FILE" ]; then
    [ -r "$CONFIG_FILE" ] || die 1 "cannot read the config file $CONFIG_FILE (run as root?)"
    read_config "$CONFIG_FILE"
    if [ -n "$CFG_TOKEN" ] && [ -n "$(find "$CONFIG_FILE" -prune -perm -0004 2>/dev/null)" ]; then
        warn "$CONFIG_FILE is readable by everyone, and it holds a token: chmod 0600 $CONFIG_FILE"
    fi
fi

pick() {
    # The first non-empty argument.
    for _v in "$@"; do
        if [ -n "$_v" ]; then
            printf '%s' "$_v"
            return
        fi
    done
}

URL=$(pick "$ARG_URL" "${VXLANMGR_URL:-}" "$CFG_URL")
TOKEN=$(pick "$ARG_TOKEN" "${VXLANMGR_TOKEN:-}" "$CFG_TOKEN")
INTERFACE=$(pick "$ARG_INTERFACE" "${VXLANMGR_INTERFACE:-}" "$CFG_INTERFACE")
VTEP=$(pick "$ARG_VTEP" "${VXLANMGR_VTEP:-}" "$CFG_VTEP")
MTU=$(pick "$ARG_MTU" "${VXLANMGR_MTU:-}" "$CFG_MTU")

[ -n "$URL" ] || die 1 "no server URL: pass --url, set VXLANMGR_URL, or put VXLANMGR_URL= in $CONFIG_FILE"
[ -n "$TOKEN" ] || die 1 "no token: pass --token, set VXLANMGR_TOKEN, or put VXLANMGR_TOKEN= in $CONFIG_FILE"
case $URL in
http://?* | https://?*) ;;
*) die 1 "the URL must start with http:// or https://, got '$URL'" ;;
esac
case $URL in
*[[:space:]\"\'\\]* | *\?* | *#*) die 1 "the URL must be a plain base URL without spaces, quotes, query or fragment: '$URL'" ;;
esac
URL=${URL%/}
case $TOKEN in
*[!A-Za-z0-9._~+/=-]*) die 1 "the token contains characters a bearer token cannot have (spaces, quotes, ...)" ;;
esac

if [ "$HAVE_EXTRA" = 1 ]; then
    printf '%s' "$EXTRA_JSON" | json_flatten >/dev/null 2>&1 ||
        die 1 "--extra-json is not valid JSON: $EXTRA_JSON"
    case $(strip_blanks "$EXTRA_JSON") in
    '{'*'}') ;;
    *) die 1 "--extra-json must be a JSON object such as '{\"rack\": \"r1\"}'" ;;
    esac
fi

# ---------------------------------------------------------------- detection

detect_hostname() {
    for _how in "hostname -f" "hostname" "uname -n" "cat /etc/hostname"; do
        # shellcheck disable=SC2086 # the command and its flag are meant to split
        _name=$($_how 2>/dev/null | awk 'NF { print $1; exit }')
        case $_name in
        '' | localhost | localhost.localdomain | '(none)') continue ;;
        esac
        printf '%s' "$_name"
        return 0
    done
    return 1
}

detect_vxlan_interface() {
    # iproute2: the first link of type vxlan; busybox ip has no -d/type, so fall back to sysfs.
    _if=$(ip -o -d link show type vxlan 2>/dev/null |
        awk -F': ' 'NF >= 2 { name = $2; sub(/@.*/, "", name); print name; exit }')
    if [ -z "$_if" ]; then
        for _uevent in /sys/class/net/*/uevent; do
            [ -r "$_uevent" ] || continue
            if grep -qx 'DEVTYPE=vxlan' "$_uevent" 2>/dev/null; then
                _if=${_uevent%/uevent}
                _if=${_if##*/}
                break
            fi
        done
    fi
    [ -n "$_if" ] || return 1
    printf '%s' "$_if"
}

detect_ipv4() {
    # `-f inet` rather than `-4`: busybox ip only knows the former.
    ip -o -f inet addr show dev "$1" 2>/dev/null | awk '
        / scope global / {
            for (k = 1; k < NF; k++) if ($k == "inet") { split($(k + 1), a, "/"); print a[1]; exit }
        }'
}

detect_mac() {
    _mac=
    if [ -r "/sys/class/net/$1/address" ]; then
        _mac=$(cat "/sys/class/net/$1/address" 2>/dev/null)
    fi
    if [ -z "$_mac" ]; then
        _mac=$(ip -o link show dev "$1" 2>/dev/null |
            awk '{ for (k = 1; k < NF; k++) if ($k ~ /^link\//) { print $(k + 1); exit } }')
    fi
    printf '%s' "$_mac"
}

is_vxlan() {
    grep -qx 'DEVTYPE=vxlan' "/sys/class/net/$1/uevent" 2>/dev/null && return 0
    ip -d link show dev "$1" 2>/dev/null | grep -q '^[[:space:]]*vxlan '
}

detect_vni() {
    ip -d link show dev "$1" 2>/dev/null | awk '
        { for (k = 1; k < NF - 1; k++) if ($k == "vxlan" && $(k + 1) == "id") { print $(k + 2); exit } }'
}

# word_after WORD — the word following WORD on stdin ("local" in "vxlan id 7 local 192.0.2.5 ...").
word_after() {
    awk -v w="$1" '{ for (k = 1; k < NF; k++) if ($k == w) { print $(k + 1); exit } }'
}

detect_vtep() {
    # The vxlan link's underlay address, empty when it has none; fails when `ip` shows no details
    # (busybox). Without `local` the kernel sends from the source address of the route towards the
    # remote end or the multicast group, so that is the VTEP.
    _details=$(ip -d link show dev "$1" 2>/dev/null | awk '$1 == "vxlan" { print; exit }')
    [ -n "$_details" ] || return 1
    _vtep=$(printf '%s\n' "$_details" | word_after local)
    if [ -z "$_vtep" ]; then
        _peer=$(printf '%s\n' "$_details" | word_after remote)
        [ -n "$_peer" ] || _peer=$(printf '%s\n' "$_details" | word_after group)
        [ -z "$_peer" ] || _vtep=$(ip -o route get "$_peer" 2>/dev/null | word_after src)
    fi
    printf '%s' "$_vtep"
}

detect_mtu() {
    _mtu=
    if [ -r "/sys/class/net/$1/mtu" ]; then
        _mtu=$(cat "/sys/class/net/$1/mtu" 2>/dev/null)
    fi
    is_uint "$_mtu" || _mtu=$(ip -o link show dev "$1" 2>/dev/null | word_after mtu)
    printf '%s' "$_mtu"
}

if [ -n "$ARG_HOSTNAME" ]; then
    HOSTNAME_VALUE=$ARG_HOSTNAME
else
    HOSTNAME_VALUE=$(detect_hostname) || die 2 "cannot determine the host name; pass --hostname"
fi

if [ -z "$INTERFACE" ]; then
    INTERFACE=$(detect_vxlan_interface) ||
        die 2 "no vxlan interface found (ip -d link show type vxlan); create it first or pass --interface"
fi
case $INTERFACE in
'' | '.' | '..' | -* | */* | *[[:space:]]*) die 1 "not an interface name: '$INTERFACE'" ;;
esac
[ -e "/sys/class/net/$INTERFACE" ] || ip link show dev "$INTERFACE" >/dev/null 2>&1 ||
    die 2 "interface $INTERFACE does not exist"

if [ -n "$ARG_IP" ]; then
    IP=$ARG_IP
else
    IP=$(detect_ipv4 "$INTERFACE")
    [ -n "$IP" ] || die 2 "interface $INTERFACE has no global IPv4 address (ip -o -f inet addr show dev $INTERFACE); pass --ip"
fi
case $IP in
*[!0-9a-fA-F.:]* | '') die 1 "not an IP address: '$IP'" ;;
esac

if [ -n "$ARG_MAC" ]; then
    MAC=$ARG_MAC
else
    MAC=$(detect_mac "$INTERFACE")
    case $MAC in
    '' | 00:00:00:00:00:00) die 2 "interface $INTERFACE has no MAC address; pass --mac" ;;
    esac
fi

IS_VXLAN=0
is_vxlan "$INTERFACE" && IS_VXLAN=1

if [ -n "$ARG_VNI" ]; then
    is_uint "$ARG_VNI" || die 1 "--vni must be a whole number, got '$ARG_VNI'"
    VNI=$ARG_VNI
elif [ "$IS_VXLAN" = 1 ]; then
    VNI=$(detect_vni "$INTERFACE")
    is_uint "$VNI" ||
        die 2 "cannot read the VNI of $INTERFACE (needs iproute2's 'ip -d link'; busybox ip cannot); pass --vni"
else
    VNI=
fi

valid_vtep() {
    case $1 in
    '' | *[!0-9a-fA-F.:]*) return 1 ;;
    esac
    return 0
}

valid_mtu() {
    # Leading zeros are left out by the caller: they are not JSON.
    is_uint "$1" && [ ${#1} -le 5 ] && [ "$1" -ge 68 ] && [ "$1" -le 65535 ]
}

# Given ones are checked; detected ones that cannot be read or make no sense are left out, and the server
# keeps what it has: a registration must not fail for them.
if [ -n "$VTEP" ]; then
    [ "$VTEP" = none ] || valid_vtep "$VTEP" ||
        die 1 "the VTEP address (--vtep, VXLANMGR_VTEP) must be an IP address or none, got '$VTEP'"
elif [ "$IS_VXLAN" = 1 ]; then
    VTEP=$(detect_vtep "$INTERFACE") ||
        warn "cannot read the VTEP address of $INTERFACE (needs iproute2's 'ip -d link'); pass --vtep"
    valid_vtep "$VTEP" || VTEP=
fi
if [ -n "$MTU" ]; then
    _given=$MTU
    is_uint "$MTU" && MTU=${MTU#"${MTU%%[!0]*}"}
    [ "$MTU" = none ] || valid_mtu "$MTU" ||
        die 1 "the MTU (--mtu, VXLANMGR_MTU) must be a whole number from 68 to 65535 or none, got '$_given'"
elif [ "$IS_VXLAN" = 1 ]; then
    MTU=$(detect_mtu "$INTERFACE")
    valid_mtu "$MTU" || MTU=
fi

# ---------------------------------------------------------------- the request

BODY="{\"hostname\":$(json_str "$HOSTNAME_VALUE"),\"mac_address\":$(json_str "$MAC")"
[ -n "$VNI" ] && BODY="$BODY,\"vni\":$VNI"
case $VTEP in
'') ;;
none) BODY="$BODY,\"vtep\":null" ;;
*) BODY="$BODY,\"vtep\":$(json_str "$VTEP")" ;;
esac
case $MTU in
'') ;;
none) BODY="$BODY,\"mtu\":null" ;;
*) BODY="$BODY,\"mtu\":$MTU" ;;
esac
[ "$HAVE_EXTRA" = 1 ] && BODY="$BODY,\"extra_data\":$EXTRA_JSON"
BODY="$BODY}"
REQUEST_URL="$URL/api/machines/$IP"

mask_token() {
    # Enough to tell tokens apart (the server shows the same 8-character prefix), never the secret.
    if [ ${#1} -ge 24 ]; then
        printf '%s********' "$(printf '%s' "$1" | cut -c1-8)"
    else
        printf '********'
    fi
}

if [ "$DRY_RUN" = 1 ]; then
    printf 'PUT %s\n' "$REQUEST_URL"
    printf 'Authorization: Bearer %s\n' "$(mask_token "$TOKEN")"
    printf 'Content-Type: application/json\n'
    printf 'Accept: application/json\n'
    printf 'User-Agent: %s\n' "$USER_AGENT"
    printf '\n%s\n' "$BODY"
    exit 0
fi

CLIENT=${VXLANMGR_HTTP_CLIENT:-}
case $CLIENT in
'')
    if command -v curl >/dev/null 2>&1; then
        CLIENT=curl
    elif command -v wget >/dev/null 2>&1; then
        CLIENT=wget
    else
        die 1 "curl is needed (apk add curl / apt-get install curl)"
    fi
    ;;
curl | wget) command -v "$CLIENT" >/dev/null 2>&1 || die 1 "VXLANMGR_HTTP_CLIENT=$CLIENT, but $CLIENT is not installed" ;;
*) die 1 "VXLANMGR_HTTP_CLIENT must be curl or wget, got '$CLIENT'" ;;
esac
if [ "$CLIENT" = wget ] && ! wget --help 2>&1 | grep -q -- '--method'; then
    die 1 "curl is needed: this wget cannot send PUT (busybox wget has no --method; apk add curl)"
fi

TMP=$(umask 077 && mktemp -d "${TMPDIR:-/tmp}/vxlanmgr-register.XXXXXX") || die 1 "cannot create a temporary directory"
cleanup() { rm -rf "$TMP"; }
trap cleanup EXIT
trap 'cleanup; trap - EXIT; exit 130' INT
trap 'cleanup; trap - EXIT; exit 143' TERM
printf '%s' "$BODY" >"$TMP/body"

CONNECT_TIMEOUT=$((TIMEOUT < 10 ? TIMEOUT : 10))

# send_once — one attempt. Sets STATUS (HTTP status, empty on a transport error), RETRY_AFTER,
# LOCATION, NET_ERROR (one line) and NET_PERMANENT (1 when retrying cannot help).
send_once() {
    STATUS='' RETRY_AFTER='' LOCATION='' NET_ERROR='' NET_PERMANENT=0
    : >"$TMP/headers"
    : >"$TMP/response"
    if [ "$CLIENT" = curl ]; then
        # The token goes through curl's config on stdin so it never shows in the process list.
        _code=$(printf 'header = "Authorization: Bearer %s"\n' "$TOKEN" |
            curl -sS -K - -X PUT \
                -H 'Content-Type: application/json' -H 'Accept: application/json' -H 'Expect:' \
                -A "$USER_AGENT" --data-binary "@$TMP/body" \
                --connect-timeout "$CONNECT_TIMEOUT" --max-time "$TIMEOUT" \
                -D "$TMP/headers" -o "$TMP/response" -w '%{http_code}' \
                "$REQUEST_URL" 2>"$TMP/stderr")
        _rc=$?
        if [ "$_rc" -ne 0 ]; then
            NET_ERROR=$(awk 'NF { line = $0 } END { print line }' "$TMP/stderr")
            [ -n "$NET_ERROR" ] || NET_ERROR="curl failed with exit code $_rc"
            case $_rc in
            1 | 2 | 3 | 4 | 26 | 27 | 43 | 48 | 53 | 54 | 58 | 59 | 60 | 77 | 80 | 83 | 90 | 91) NET_PERMANENT=1 ;;
            esac
            return
        fi
        STATUS=$_code
    else
        {
            printf 'header = Authorization: Bearer %s\n' "$TOKEN"
            printf 'header = Content-Type: application/json\n'
            printf 'header = Accept: application/json\n'
        } >"$TMP/wgetrc"
        wget -q -S --config="$TMP/wgetrc" --method=PUT --body-file="$TMP/body" \
            --content-on-error --max-redirect=0 --tries=1 --timeout="$TIMEOUT" \
            -U "$USER_AGENT" -O "$TMP/response" "$REQUEST_URL" 2>"$TMP/stderr"
        _rc=$?
        sed -n 's/^  //p' "$TMP/stderr" >"$TMP/headers"
        STATUS=$(awk '$1 ~ /^HTTP\// { code = $2 } END { print code }' "$TMP/headers")
        if [ -z "$STATUS" ]; then
            NET_ERROR=$(awk 'NF { line = $0 } END { print line }' "$TMP/stderr")
            [ -n "$NET_ERROR" ] || NET_ERROR="wget failed with exit code $_rc"
            case $_rc in
            2 | 3 | 5 | 6) NET_PERMANENT=1 ;;
            esac
            return
        fi
    fi
    RETRY_AFTER=$(tr -d '\r' <"$TMP/headers" |
        awk 'tolower($1) == "retry-after:" { v = $2 } END { print v }')
    LOCATION=$(tr -d '\r' <"$TMP/headers" |
        awk 'tolower($1) == "location:" { v = $2 } END { print v }')
}

SEED=$(($$ + $(date +%s 2>/dev/null || echo 0)))
rand_upto() {
    # A random whole number from 0 to $1 ($RANDOM is not POSIX: /dev/urandom, else an LCG).
    [ "$1" -gt 0 ] || {
        echo 0
        return
    }
    _r=$(od -An -N4 -tu4 /dev/urandom 2>/dev/null | tr -dc '0-9')
    if [ -z "$_r" ]; then
        SEED=$(((SEED * 1103515245 + 12345) % 2147483648))
        _r=$SEED
    fi
    echo $((_r % ($1 + 1)))
}

backoff_ms() {
    # The wait after failed attempt $1, honouring Retry-After $2 (whole seconds) when reasonable.
    _d=$BASE_MS
    _n=1
    while [ "$_n" -lt "$1" ] && [ "$_d" -lt "$CAP_MS" ]; do
        _d=$((_d * 2))
        _n=$((_n + 1))
    done
    [ "$_d" -le "$CAP_MS" ] || _d=$CAP_MS
    _wait=$((_d / 2 + $(rand_upto $((_d - _d / 2)))))
    if is_uint "$2" && [ ${#2} -le 6 ]; then
        _ra=$(($2 * 1000))
        if [ "$_ra" -gt "$CAP_MS" ]; then
            # Longer than we are willing to sleep: wait the longest backoff step instead.
            _ra=$((CAP_MS / 2 + $(rand_upto $((CAP_MS - CAP_MS / 2)))))
        else
            _ra=$((_ra + $(rand_upto "$BASE_MS")))
        fi
        [ "$_ra" -le "$_wait" ] || _wait=$_ra
    fi
    echo "$_wait"
}

seconds() { printf '%d.%03d' $(($1 / 1000)) $(($1 % 1000)); }

attempt=1
while :; do
    send_once
    reason=
    if [ -z "$STATUS" ]; then
        if [ "$NET_PERMANENT" = 1 ]; then
            die 1 "cannot reach $REQUEST_URL: $NET_ERROR"
        fi
        reason=$NET_ERROR
    else
        case $STATUS in
        200 | 201)
            if [ "$STATUS" = 201 ]; then what=created; else what=updated; fi
            name=$(json_get hostname "$TMP/response")
            addr=$(json_get ip_address "$TMP/response")
            # Something else answering at that URL (a web page, a wrong path) is not a registration.
            [ -n "$addr" ] || die 3 "HTTP $STATUS, but the body is not a vxlanmgr machine: is $URL the vxlanmgr URL?"
            printf 'registered %s %s (%s)\n' "$name" "$addr" "$what"
            exit 0
            ;;
        429 | 502 | 503 | 504)
            msg=$(server_message "$TMP/response")
            reason="HTTP $STATUS${msg:+: $msg}"
            ;;
        301 | 302 | 303 | 307 | 308)
            die 3 "HTTP $STATUS: the server redirects to ${LOCATION:-somewhere else}; use that URL (a redirect would drop the PUT)"
            ;;
        *)
            msg=$(server_message "$TMP/response")
            # GNU wget drops the body of a 401, so say what vxlanmgr would have said.
            [ -n "$msg" ] || [ "$STATUS" != 401 ] || msg="the token is unknown or revoked"
            die 3 "HTTP $STATUS${msg:+: $msg}"
            ;;
        esac
    fi
    if [ "$attempt" -ge "$MAX_ATTEMPTS" ]; then
        die 4 "gave up after $attempt attempt(s): $reason"
    fi
    wait_ms=$(backoff_ms "$attempt" "$RETRY_AFTER")
    say "$PROG: attempt $attempt/$MAX_ATTEMPTS failed: $reason; retrying in $(seconds "$wait_ms") s"
    sleep "$(seconds "$wait_ms")" 2>/dev/null || sleep $(((wait_ms + 999) / 1000))
    attempt=$((attempt + 1))
done
