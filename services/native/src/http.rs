//! HTTP/1.1 as pure logic: which requests this plane proxies itself, the replica's answer read
//! off its connection, and the answer written to the client, byte for byte as the Python front
//! end (`dslab.common.front`) writes it.
//!
//! The plane proxies only the common case: a complete GET head, no body, not an admin path,
//! within the edge's limits. Anything else (another method, an admin path, a body, an upgrade,
//! a head cut short, a limit passed, what httparse will not read) is `Handover`: the
//! connection goes to the Python front end, which serves or refuses it as it always has.
//!
//! So every framing question has one verdict, llhttp's: what httparse would read more
//! leniently than llhttp is handed over too. Bare LF line endings (httparse takes them,
//! llhttp refuses them) and a Host field missing from HTTP/1.1 or given twice (RFC 9112 §3.2:
//! 400, which the front end answers) are such cases.

/// What the plane needs of the edge's limits (`dslab.common.edge.EdgeLimits`).
#[derive(Clone, Debug)]
pub struct Limits {
    pub max_request_line: usize,
    pub max_headers: usize,
    pub max_header_bytes: usize,
}

#[derive(Debug, PartialEq, Eq)]
pub struct Get<'a> {
    pub uri: &'a [u8],
    pub request_id: Option<&'a [u8]>,
    pub keep_alive: bool,
    pub http10: bool,
    pub len: usize, // bytes of the head, CRLF CRLF included
}

#[derive(Debug, PartialEq, Eq)]
pub enum Head<'a> {
    Proxy(Get<'a>),
    Handover,
}

fn header_is(name: &str, expected: &str) -> bool {
    name.len() == expected.len() && name.eq_ignore_ascii_case(expected)
}

fn has_token(value: &[u8], token: &[u8]) -> bool {
    value.split(|&b| b == b',').any(|t| t.trim_ascii().eq_ignore_ascii_case(token))
}

/// A header value as llhttp (the Python front end) reads it: leading whitespace dropped, as
/// httparse drops it, trailing whitespace kept, where httparse drops it. `value` lies in `buf`.
fn as_llhttp_reads<'a>(buf: &'a [u8], value: &'a [u8]) -> &'a [u8] {
    if value.is_empty() {
        return value; // only whitespace: nothing, for both
    }
    let start = value.as_ptr() as usize - buf.as_ptr() as usize;
    let mut end = start + value.len();
    while end < buf.len() && (buf[end] == b' ' || buf[end] == b'\t') {
        end += 1;
    }
    &buf[start..end]
}

/// The head at the start of `buf`, if the plane proxies it. `not_proxied`: the paths the
/// control plane serves (admin, metrics).
pub fn read_request<'a>(buf: &'a [u8], limits: &Limits, not_proxied: &[Vec<u8>]) -> Head<'a> {
    let mut headers = vec![httparse::EMPTY_HEADER; limits.max_headers];
    let mut request = httparse::Request::new(&mut headers);
    let len = match request.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        _ => return Head::Handover, // cut short, malformed, or too many headers
    };
    let (Some("GET"), Some(uri), Some(version)) = (request.method, request.path, request.version)
    else {
        return Head::Handover;
    };
    let uri = uri.as_bytes();
    let path = uri.split(|&b| b == b'?').next().unwrap_or(uri);
    if uri.len() > limits.max_request_line || not_proxied.iter().any(|p| p == path) {
        return Head::Handover;
    }
    // llhttp takes only visible ASCII in a request target (httparse takes more): the front
    // end refuses the rest.
    if !uri.iter().all(|&b| (0x21..=0x7e).contains(&b)) {
        return Head::Handover;
    }
    // Bare LF (a LF not after a CR) anywhere in the head: llhttp refuses it, so the front end
    // answers it (400), not this plane.
    if buf[..len].iter().enumerate().any(|(i, &b)| b == b'\n' && (i == 0 || buf[i - 1] != b'\r'))
    {
        return Head::Handover;
    }
    let (mut request_id, mut header_bytes, mut connection) = (None, 0usize, None::<&[u8]>);
    let (mut length_seen, mut hosts) = (false, 0);
    for header in request.headers.iter() {
        header_bytes += header.name.len() + header.value.len() + 4;
        let name = header.name;
        if header_is(name, "host") {
            hosts += 1;
        } else if header_is(name, "x-request-id") {
            request_id = Some(as_llhttp_reads(buf, header.value));
        } else if header_is(name, "connection") {
            if connection.is_some() {
                return Head::Handover; // two Connection fields: the Python parser decides
            }
            connection = Some(header.value);
        } else if header_is(name, "content-length") {
            // A body, or a length given twice (llhttp refuses that): the front end decides.
            if length_seen || header.value.trim_ascii() != b"0" {
                return Head::Handover;
            }
            length_seen = true;
        } else if header_is(name, "transfer-encoding") || header_is(name, "upgrade") {
            return Head::Handover;
        }
    }
    if header_bytes > limits.max_header_bytes {
        return Head::Handover;
    }
    let http10 = version == 0;
    if hosts > 1 || (hosts == 0 && !http10) {
        return Head::Handover; // RFC 9112 §3.2: the front end answers 400
    }
    let keep_alive = match connection {
        Some(value) if has_token(value, b"upgrade") => return Head::Handover,
        Some(value) if http10 => has_token(value, b"keep-alive"),
        Some(value) => !has_token(value, b"close"),
        None => !http10,
    };
    Head::Proxy(Get { uri, request_id, keep_alive, http10, len })
}

/// A replica's answer, as read off its connection.
#[derive(Debug, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    pub content_type: Option<std::ops::Range<usize>>,
    pub body: std::ops::Range<usize>,
    pub keep_alive: bool,
    /// The replica's end-to-end fields, as `Name: value\r\n` lines in its order (`passed`).
    pub headers: Vec<u8>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Reply {
    Complete(Answer),
    Partial,
    Bad(String),
}

/// The most a replica's answer (head and body) may take; a longer one is the replica's failure.
pub const MAX_ANSWER: usize = 16 << 20;

/// The answer at the start of `buf`. A replica (Tornado) frames every answer by its length;
/// one framed otherwise is a protocol error here, as a malformed one is. An interim (1xx)
/// answer is returned as complete with an empty body: the caller reads on past it.
pub fn read_answer(buf: &[u8]) -> Reply {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut response = httparse::Response::new(&mut headers);
    let head = match response.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Reply::Partial,
        Err(e) => return Reply::Bad(format!("bad response from replica: {e}")),
    };
    let status = response.code.unwrap_or(0);
    let mut keep_alive = response.version == Some(1);
    let (mut length, mut content_type) = (None, None);
    for header in response.headers.iter() {
        if header_is(header.name, "content-length") {
            match std::str::from_utf8(header.value).ok().and_then(|v| v.trim().parse().ok()) {
                Some(n) => length = Some(n),
                None => return Reply::Bad("bad response from replica: Content-Length".into()),
            }
        } else if header_is(header.name, "content-type") {
            let start = header.value.as_ptr() as usize - buf.as_ptr() as usize;
            content_type = Some(start..start + header.value.len());
        } else if header_is(header.name, "connection") {
            if has_token(header.value, b"close") {
                keep_alive = false;
            } else if has_token(header.value, b"keep-alive") {
                keep_alive = true;
            }
        } else if header_is(header.name, "transfer-encoding") {
            return Reply::Bad("bad response from replica: not framed by its length".into());
        }
    }
    let length = match (status, length) {
        (100..=199 | 204 | 304, _) => 0,
        (_, Some(n)) => n,
        (_, None) => return Reply::Bad("bad response from replica: no Content-Length".into()),
    };
    if status == 101 {
        return Reply::Bad("bad response from replica: 101 to a request with no Upgrade".into());
    }
    let end = match head.checked_add(length) {
        Some(end) if end <= MAX_ANSWER => end,
        _ => return Reply::Bad(format!("bad response from replica: over {MAX_ANSWER} bytes")),
    };
    if buf.len() < end {
        return Reply::Partial;
    }
    let headers = passed(buf, response.headers);
    Reply::Complete(Answer { status, content_type, body: head..end, keep_alive, headers })
}

/// Fields a replica's answer does not pass on: the hop-by-hop ones (RFC 9110 §7.6.1), and
/// those the proxy writes itself (`write_answer`).
const NOT_PASSED: [&str; 12] = [
    "connection", "keep-alive", "proxy-connection", "te", "transfer-encoding", "upgrade",
    "trailer", "proxy-authenticate", "proxy-authorization",
    "content-length", "content-type", "x-served-by",
];

/// The fields of an answer that go on to the client, as `Name: value\r\n` lines in the
/// replica's order: all but `NOT_PASSED` and those its Connection fields name. Each value as
/// llhttp reads it, so the Python plane passes the same bytes (`proxy.end_to_end`).
fn passed(buf: &[u8], headers: &[httparse::Header<'_>]) -> Vec<u8> {
    let connection = || headers.iter().filter(|h| header_is(h.name, "connection"));
    let mut out = Vec::new();
    for header in headers {
        if NOT_PASSED.iter().any(|&n| header_is(header.name, n))
            || connection().any(|c| has_token(c.value, header.name.as_bytes()))
        {
            continue;
        }
        out.extend_from_slice(header.name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(as_llhttp_reads(buf, header.value));
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// What the client gets, as the Python front end's `_write` frames it; `passed`: the
/// replica's end-to-end fields (`Answer::headers`), after the proxy's own.
#[allow(clippy::too_many_arguments)]
pub fn write_answer(out: &mut Vec<u8>, status: u16, reason: &[u8], content_type: Option<&[u8]>,
                    served_by: &[u8], passed: &[u8], body: &[u8], keep_alive: bool,
                    http10: bool) {
    out.extend_from_slice(b"HTTP/1.1 ");
    push_number(out, u64::from(status));
    out.push(b' ');
    out.extend_from_slice(reason);
    out.extend_from_slice(b"\r\nContent-Length: ");
    push_number(out, body.len() as u64);
    out.extend_from_slice(b"\r\n");
    if let Some(content_type) = content_type {
        out.extend_from_slice(b"Content-Type: ");
        out.extend_from_slice(content_type);
        out.extend_from_slice(b"\r\n");
    }
    if !served_by.is_empty() {
        out.extend_from_slice(b"X-Served-By: ");
        out.extend_from_slice(served_by);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(passed);
    if !keep_alive {
        out.extend_from_slice(b"Connection: close\r\n");
    } else if http10 {
        out.extend_from_slice(b"Connection: keep-alive\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
}

/// The request a replica gets, as `dslab.keeper.upstream.format_get` writes it, with what a
/// reverse proxy adds: the client's address and scheme (`X-Forwarded-For`, `-Proto`).
pub fn write_get(out: &mut Vec<u8>, uri: &[u8], host: &[u8], request_id: &[u8],
                 client: &[u8]) {
    out.extend_from_slice(b"GET ");
    out.extend_from_slice(uri);
    out.extend_from_slice(b" HTTP/1.1\r\nHost: ");
    out.extend_from_slice(host);
    out.extend_from_slice(b"\r\nX-Request-ID: ");
    out.extend_from_slice(request_id);
    if !client.is_empty() {
        out.extend_from_slice(b"\r\nX-Forwarded-For: ");
        out.extend_from_slice(client);
    }
    out.extend_from_slice(b"\r\nX-Forwarded-Proto: http\r\n\r\n");
}

fn push_number(out: &mut Vec<u8>, n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    let mut n = n;
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// Latin-1 text as Python's `json.dumps` writes it inside a string (`ensure_ascii`).
pub fn push_json_latin1(out: &mut Vec<u8>, text: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for &b in text {
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0x08 => out.extend_from_slice(b"\\b"),
            0x0c => out.extend_from_slice(b"\\f"),
            0x20..=0x7f => out.push(b),
            _ => out.extend_from_slice(&[b'\\', b'u', b'0', b'0', HEX[(b >> 4) as usize],
                                         HEX[(b & 15) as usize]]),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits { max_request_line: 8192, max_headers: 100, max_header_bytes: 61440 }
    }

    fn admin() -> Vec<Vec<u8>> {
        vec![b"/rep".to_vec(), b"/metrics".to_vec()]
    }

    #[test]
    fn a_plain_get_is_proxied_with_its_id() {
        let head = b"GET /home?x=1 HTTP/1.1\r\nHost: a\r\nX-Request-ID: 42\r\n\r\nGET";
        let Head::Proxy(get) = read_request(head, &limits(), &admin()) else { panic!() };
        assert_eq!(get.uri, b"/home?x=1");
        assert_eq!(get.request_id, Some(&b"42"[..]));
        assert!(get.keep_alive && !get.http10);
        assert_eq!(get.len, head.len() - 3);
    }

    #[test]
    fn what_the_python_front_end_decides_is_handed_over() {
        for head in [
            &b"GET /home HTTP/1.1\r\nHost: a\r\n"[..], // cut short
            b"POST /home HTTP/1.1\r\n\r\n",
            b"GET /rep HTTP/1.1\r\n\r\n",
            b"GET /metrics?x HTTP/1.1\r\n\r\n",
            b"GET /home HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc",
            b"GET /home HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"GET /home HTTP/1.1\r\nContent-Length: 0\r\nContent-Length: 0\r\n\r\n",
            b"GET /home HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n",
            b"GET /ho me HTTP/1.1\r\n\r\n",
            b"GET /\xe9t\xe9 HTTP/1.1\r\n\r\n",
            b"GET /home HTTP/1.1\r\n\r\n", // no Host
            b"GET /home HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
            b"GET /home HTTP/1.0\r\nHost: a\r\nhost: a\r\n\r\n",
            b"GET /home HTTP/1.1\nHost: a\r\n\r\n", // bare LF, anywhere
            b"GET /home HTTP/1.1\r\nHost: a\n\r\n",
            b"GET /home HTTP/1.1\r\nHost: a\r\n\n",
            b"GET /home HTTP/1.1\r\nHost: a\r\nX-A: 1\r\n 2\r\n\r\n", // obs-fold
        ] {
            assert_eq!(read_request(head, &limits(), &admin()), Head::Handover, "{head:?}");
        }
        let tight = Limits { max_request_line: 4, max_headers: 1, max_header_bytes: 10 };
        for head in [&b"GET /home HTTP/1.0\r\n\r\n"[..], b"GET / HTTP/1.0\r\nA: 1\r\nB: 2\r\n\r\n",
                     b"GET / HTTP/1.0\r\nA: 12345678\r\n\r\n"] {
            assert_eq!(read_request(head, &tight, &admin()), Head::Handover, "{head:?}");
        }
    }

    #[test]
    fn a_request_ids_trailing_whitespace_is_kept_as_llhttp_keeps_it() {
        let head = b"GET / HTTP/1.1\r\nHost: a\r\nX-Request-ID: \t a b\t \r\nX-Other: 1\r\n\r\n";
        let Head::Proxy(get) = read_request(head, &limits(), &admin()) else { panic!() };
        assert_eq!(get.request_id, Some(&b"a b\t "[..]));
        let blank = b"GET / HTTP/1.1\r\nHost: a\r\nX-Request-ID:  \t \r\n\r\n";
        let Head::Proxy(get) = read_request(blank, &limits(), &admin()) else { panic!() };
        assert_eq!(get.request_id, Some(&b""[..]));
    }

    #[test]
    fn keep_alive_follows_the_version_and_connection() {
        let cases: [(&[u8], bool); 4] = [
            (b"GET / HTTP/1.0\r\n\r\n", false),
            (b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", true),
            (b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", false),
            (b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", true),
        ];
        for (head, keep_alive) in cases {
            let Head::Proxy(get) = read_request(head, &limits(), &admin()) else { panic!() };
            assert_eq!(get.keep_alive, keep_alive, "{head:?}");
        }
    }

    #[test]
    fn an_answer_is_complete_once_its_body_is_in() {
        let answer = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nhi";
        assert_eq!(read_answer(&answer[..answer.len() - 1]), Reply::Partial);
        let Reply::Complete(a) = read_answer(answer) else { panic!() };
        assert_eq!((a.status, &answer[a.body.clone()]), (200, &b"hi"[..]));
        assert_eq!(&answer[a.content_type.unwrap()], b"text/plain");
        assert!(matches!(read_answer(b"HTTP/1.1 200 OK\r\n\r\n"), Reply::Bad(_)));
        assert!(matches!(read_answer(b"HTTP/1.1 204 No Content\r\n\r\n"), Reply::Complete(_)));
    }

    #[test]
    fn an_answer_is_bounded_and_its_length_checked() {
        let huge = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", MAX_ANSWER);
        assert!(matches!(read_answer(huge.as_bytes()), Reply::Bad(_)));
        let wraps = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", usize::MAX);
        assert!(matches!(read_answer(wraps.as_bytes()), Reply::Bad(_)));
        let Reply::Complete(a) = read_answer(b"HTTP/1.1 103 Early Hints\r\nLink: x\r\n\r\nHTTP")
        else { panic!() };
        assert_eq!((a.status, a.body.len()), (103, 0));
        assert!(matches!(read_answer(b"HTTP/1.1 101 Switching\r\n\r\n"), Reply::Bad(_)));
    }

    #[test]
    fn a_forwarded_get_says_who_asked_and_how() {
        let mut out = vec![];
        write_get(&mut out, b"/home?x=1", b"Server1", b"42", b"10.0.0.7");
        assert_eq!(out, b"GET /home?x=1 HTTP/1.1\r\nHost: Server1\r\nX-Request-ID: 42\r\n\
                          X-Forwarded-For: 10.0.0.7\r\nX-Forwarded-Proto: http\r\n\r\n");
    }

    #[test]
    fn end_to_end_fields_are_passed_back_and_hop_by_hop_ones_dropped() {
        let answer = b"HTTP/1.1 200 OK\r\nContent-Type: a/b\r\nCache-Control: no-store \r\n\
                       Connection: keep-alive, X-Hop\r\nKeep-Alive: timeout=5\r\nx-hop: 1\r\n\
                       X-Served-By: spoof\r\nTE: trailers\r\nETag: \"1\"\r\n\
                       Content-Length: 0\r\n\r\n";
        let Reply::Complete(a) = read_answer(answer) else { panic!() };
        assert_eq!(a.headers, b"Cache-Control: no-store \r\nETag: \"1\"\r\n");
        let mut out = vec![];
        write_answer(&mut out, 200, b"OK", Some(b"a/b"), b"S1", &a.headers, b"", false, false);
        assert_eq!(out, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nContent-Type: a/b\r\n\
                          X-Served-By: S1\r\nCache-Control: no-store \r\nETag: \"1\"\r\n\
                          Connection: close\r\n\r\n");
    }

    #[test]
    fn json_text_is_escaped_as_python_escapes_it() {
        let mut out = vec![];
        push_json_latin1(&mut out, b"a\"\\\n\x01\xe9\x7f");
        assert_eq!(out, br#"a\"\\\n\u0001\u00e9"#.iter().copied().chain([0x7f]).collect::<Vec<_>>());
    }
}
