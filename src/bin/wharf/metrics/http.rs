//! The metrics endpoint's HTTP/1.1, sans-IO: what the bytes a scraper sent so far ask for,
//! and the response. Requests are parsed with `httparse`. One request per connection: every
//! response says `Connection: close` and the connection closes after it, which every
//! scraper handles and which keeps the endpoint's state to nothing.

/// The longest request head read; a longer one gets 431 (a scrape is a few hundred bytes).
pub const MAX_REQUEST: usize = 8 * 1024;

/// Most headers a request may have.
const MAX_HEADERS: usize = 32;

/// What the request read so far asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Asked {
    /// The head is not complete yet.
    More,
    /// `GET /metrics`; `head_only` for `HEAD`.
    Metrics { head_only: bool },
    /// Anything else: this status, then close.
    Refuse(Status),
}

/// A status the endpoint answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    BadRequest,
    NotFound,
    MethodNotAllowed,
    HeadTooLarge,
    Busy,
}

impl Status {
    fn line(self) -> &'static str {
        match self {
            Status::BadRequest => "400 Bad Request",
            Status::NotFound => "404 Not Found",
            Status::MethodNotAllowed => "405 Method Not Allowed",
            Status::HeadTooLarge => "431 Request Header Fields Too Large",
            Status::Busy => "503 Service Unavailable",
        }
    }
}

/// What `input` (everything the client sent so far) asks for.
pub fn examine(input: &[u8]) -> Asked {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    match request.parse(input) {
        Ok(httparse::Status::Partial) if input.len() >= MAX_REQUEST => {
            Asked::Refuse(Status::HeadTooLarge)
        }
        Ok(httparse::Status::Partial) => Asked::More,
        Err(httparse::Error::TooManyHeaders) => Asked::Refuse(Status::HeadTooLarge),
        Err(_) => Asked::Refuse(Status::BadRequest),
        Ok(httparse::Status::Complete(_)) => {
            let head_only = match request.method {
                Some("GET") => false,
                Some("HEAD") => true,
                _ => return Asked::Refuse(Status::MethodNotAllowed),
            };
            let path = request.path.unwrap_or("");
            let path = path.split_once('?').map_or(path, |(path, _query)| path);
            match path {
                "/metrics" => Asked::Metrics { head_only },
                _ => Asked::Refuse(Status::NotFound),
            }
        }
    }
}

/// The response to a scrape: `page`, or only its head.
pub fn metrics(page: &str, head_only: bool) -> Vec<u8> {
    let mut response = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        page.len()
    )
    .into_bytes();
    if !head_only {
        response.extend_from_slice(page.as_bytes());
    }
    response
}

/// The response that refuses a request.
pub fn refusal(status: Status) -> Vec<u8> {
    let body = match status {
        Status::NotFound => "not found: the metrics are at /metrics\n".to_string(),
        status => format!("{}\n", status.line()),
    };
    let allow = match status {
        Status::MethodNotAllowed => "Allow: GET, HEAD\r\n",
        _ => "",
    };
    format!(
        "HTTP/1.1 {}\r\nContent-Type: text/plain; charset=utf-8\r\n{allow}\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        status.line(),
        body.len()
    )
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scrape_is_get_or_head_of_metrics() {
        let get = b"GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: */*\r\n\r\n";
        assert_eq!(examine(get), Asked::Metrics { head_only: false });
        let head = b"HEAD /metrics?name[]=x HTTP/1.0\r\n\r\n";
        assert_eq!(examine(head), Asked::Metrics { head_only: true });
    }

    #[test]
    fn a_head_split_anywhere_waits_for_the_rest() {
        let get = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n";
        for cut in 0..get.len() {
            assert_eq!(examine(&get[..cut]), Asked::More, "cut at {cut}");
        }
    }

    #[test]
    fn anything_else_is_refused_with_its_status() {
        let refused = |input: &[u8]| match examine(input) {
            Asked::Refuse(status) => Some(status),
            _ => None,
        };
        assert_eq!(refused(b"GET / HTTP/1.1\r\n\r\n"), Some(Status::NotFound));
        assert_eq!(
            refused(b"POST /metrics HTTP/1.1\r\n\r\n"),
            Some(Status::MethodNotAllowed)
        );
        assert_eq!(refused(b"hello\r\n\r\n"), Some(Status::BadRequest));
        assert_eq!(
            refused(b"GET /metrics HTTP/1.1\r\nBad Header\r\n\r\n"),
            Some(Status::BadRequest)
        );
        let long = [
            b"GET /metrics HTTP/1.1\r\nX: ".as_slice(),
            &[b'a'; MAX_REQUEST],
        ]
        .concat();
        assert_eq!(refused(&long), Some(Status::HeadTooLarge));
        let many = format!("GET /metrics HTTP/1.1\r\n{}\r\n", "X: y\r\n".repeat(40));
        assert_eq!(refused(many.as_bytes()), Some(Status::HeadTooLarge));
    }

    proptest::proptest! {
        /// Whatever a client sends: no panic, and "more" only while under the limit.
        #[test]
        fn any_bytes_get_an_answer_or_wait_within_the_limit(
            input in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600),
        ) {
            if examine(&input) == Asked::More {
                proptest::prop_assert!(input.len() < MAX_REQUEST);
            }
        }
    }

    #[test]
    fn responses_say_their_length_and_close() {
        let response = String::from_utf8(metrics("a 1\n", false)).unwrap();
        assert!(response.starts_with("HTTP/1.1 200 OK\r\n"));
        assert!(response.contains("Content-Length: 4\r\nConnection: close\r\n\r\na 1\n"));
        let head = String::from_utf8(metrics("a 1\n", true)).unwrap();
        assert!(head.ends_with("\r\n\r\n"));
        let refusal = String::from_utf8(refusal(Status::MethodNotAllowed)).unwrap();
        assert!(refusal.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"));
        assert!(refusal.contains("Allow: GET, HEAD\r\n"));
    }
}
