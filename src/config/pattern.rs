//! Host and path patterns: `api.example.eu`, `*.ingest.example.eu` (any subdomain, not the apex),
//! and path globs such as `/v1/geodata/*` for important-data rules.

use std::fmt;

/// A host name pattern from the config, lower-cased.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    /// Matches this host exactly (case-insensitively, trailing dot ignored).
    Exact(String),
    /// `*.suffix`: matches any host ending in `.suffix` (one or more labels before it).
    Wildcard(String),
}

impl HostPattern {
    /// Parses a pattern, or says why it is not one.
    ///
    /// # Errors
    /// Empty labels, characters outside host names, or `*` anywhere but as the first label.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let s = raw.trim().trim_end_matches('.').to_ascii_lowercase();
        if s.is_empty() {
            return Err("empty host pattern".into());
        }
        let (wild, rest) = match s.strip_prefix("*.") {
            Some(rest) => (true, rest.to_owned()),
            None => (false, s.clone()),
        };
        if rest.is_empty() {
            return Err(format!("`{raw}` has nothing after `*.`"));
        }
        if rest.contains('*') {
            return Err(format!(
                "`{raw}`: `*` is only allowed as the whole first label (`*.example.com`)"
            ));
        }
        let is_ipv6 = rest.starts_with('[') && rest.ends_with(']');
        if !is_ipv6 {
            for label in rest.split('.') {
                if label.is_empty() {
                    return Err(format!("`{raw}` has an empty label"));
                }
                if !label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                {
                    return Err(format!("`{raw}` is not a host name"));
                }
            }
        }
        Ok(if wild {
            HostPattern::Wildcard(rest)
        } else {
            HostPattern::Exact(rest)
        })
    }

    /// Whether `host` (already lower-cased, without port or trailing dot) matches.
    pub fn matches(&self, host: &str) -> bool {
        match self {
            HostPattern::Exact(h) => h == host,
            HostPattern::Wildcard(suffix) => {
                host.len() > suffix.len() + 1
                    && host.ends_with(suffix.as_str())
                    && host.as_bytes()[host.len() - suffix.len() - 1] == b'.'
            }
        }
    }

    /// Whether some host name could match both patterns.
    pub fn overlaps(&self, other: &HostPattern) -> bool {
        match (self, other) {
            (HostPattern::Exact(a), HostPattern::Exact(b)) => a == b,
            (HostPattern::Exact(e), w @ HostPattern::Wildcard(_))
            | (w @ HostPattern::Wildcard(_), HostPattern::Exact(e)) => w.matches(e),
            (HostPattern::Wildcard(a), HostPattern::Wildcard(b)) => {
                a == b
                    || HostPattern::Wildcard(b.clone()).matches(a)
                    || HostPattern::Wildcard(a.clone()).matches(b)
            }
        }
    }
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostPattern::Exact(h) => f.write_str(h),
            HostPattern::Wildcard(s) => write!(f, "*.{s}"),
        }
    }
}

/// Normalises a request's host for matching: lower case, no trailing dot, no port.
pub fn normalize_host(host: &str) -> String {
    host.trim_end_matches('.').to_ascii_lowercase()
}

/// A path glob: `*` matches any run of characters (including `/`), `?` one character.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathGlob(String);

impl PathGlob {
    /// Parses a glob; it must start with `/` (or be `*`).
    ///
    /// # Errors
    /// When the glob does not start with `/` or `*`.
    pub fn parse(raw: &str) -> Result<Self, String> {
        if raw.starts_with('/') || raw.starts_with('*') {
            Ok(PathGlob(raw.to_owned()))
        } else {
            Err(format!("path pattern `{raw}` must start with `/`"))
        }
    }

    /// Whether `path` (without query) matches.
    pub fn matches(&self, path: &str) -> bool {
        glob_match(self.0.as_bytes(), path.as_bytes())
    }

    /// Whether a request path (without query) matches, as written or normalised (see
    /// [`normalize_path`]): a client cannot step around a rule by spelling the path otherwise.
    pub fn matches_request(&self, path: &str) -> bool {
        self.matches(path) || glob_match(self.0.as_bytes(), &normalize_path(path))
    }

    /// The glob as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The path a server acts on (SPEC §3 important data): percent-decoded, segment parameters
/// (`;v=2`) removed, empty segments (repeated slashes) and `.` dropped, `..` resolved (never
/// above the root). A trailing slash is kept.
pub fn normalize_path(path: &str) -> Vec<u8> {
    let raw = path.as_bytes();
    let mut decoded = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        if raw[i] == b'%' && i + 2 < raw.len() {
            let h = (raw[i + 1] as char).to_digit(16);
            let l = (raw[i + 2] as char).to_digit(16);
            if let (Some(h), Some(l)) = (h, l) {
                decoded.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        decoded.push(raw[i]);
        i += 1;
    }
    let mut segs: Vec<&[u8]> = Vec::new();
    for seg in decoded.split(|c| *c == b'/') {
        let seg = seg.split(|c| *c == b';').next().unwrap_or(&[]);
        match seg {
            b"" | b"." => {}
            b".." => {
                segs.pop();
            }
            s => segs.push(s),
        }
    }
    let mut out = Vec::with_capacity(decoded.len() + 1);
    for s in &segs {
        out.push(b'/');
        out.extend_from_slice(s);
    }
    let trailing = matches!(decoded.last(), Some(b'/'))
        || decoded.ends_with(b"/.")
        || decoded.ends_with(b"/..");
    if out.is_empty() || trailing {
        out.push(b'/');
    }
    out
}

/// Iterative wildcard matching with single-star backtracking: linear in practice, no recursion.
fn glob_match(pat: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pat.len() && (pat[p] == b'?' || pat[p] == text[t]) {
            p += 1;
            t += 1;
        } else if p < pat.len() && pat[p] == b'*' {
            star = Some((p, t));
            p += 1;
        } else if let Some((sp, st)) = star {
            p = sp + 1;
            t = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    while p < pat.len() && pat[p] == b'*' {
        p += 1;
    }
    p == pat.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_patterns() {
        let w = HostPattern::parse("*.CN.").unwrap();
        assert!(w.matches("example.cn"));
        assert!(w.matches("a.b.cn"));
        assert!(!w.matches("cn"));
        assert!(!w.matches("example.cnx"));
        assert!(!w.matches("examplecn"));
        let e = HostPattern::parse("api.analytics.example.eu").unwrap();
        assert!(e.matches("api.analytics.example.eu"));
        assert!(!e.matches("x.api.analytics.example.eu"));
        assert!(HostPattern::parse("a.*.cn").is_err());
        assert!(HostPattern::parse("*.").is_err());
        assert!(HostPattern::parse("a..cn").is_err());
        assert!(HostPattern::parse("a b.cn").is_err());
    }

    #[test]
    fn overlaps() {
        let p = |s| HostPattern::parse(s).unwrap();
        assert!(p("*.cn").overlaps(&p("api.example.cn")));
        assert!(p("*.cn").overlaps(&p("*.example.cn")));
        assert!(p("*.example.cn").overlaps(&p("*.cn")));
        assert!(!p("*.cn").overlaps(&p("*.eu")));
        assert!(!p("*.example.eu").overlaps(&p("example.eu")));
    }

    #[test]
    fn path_globs() {
        let g = PathGlob::parse("/v1/geodata/*").unwrap();
        assert!(g.matches("/v1/geodata/x"));
        assert!(g.matches("/v1/geodata/x/y"));
        assert!(!g.matches("/v1/geo"));
        assert!(PathGlob::parse("/a?c").unwrap().matches("/abc"));
        assert!(PathGlob::parse("v1").is_err());
        assert!(PathGlob::parse("*").unwrap().matches("/anything"));
    }

    #[test]
    fn important_paths_match_however_spelled() {
        let g = PathGlob::parse("/v1/geodata/*").unwrap();
        for p in [
            "/v1/geodata/x",
            "/v1/%67eodata/x",
            "/v1/%67%65%6F%64%61%74%61/x",
            "/v1//geodata/x",
            "//v1///geodata/x",
            "/v1/./geodata/x",
            "/v2/../v1/geodata/x",
            "/v2/%2e%2e/v1/geodata/x",
            "/v1/geodata;v=2/x",
            "/v1;a=b/geodata/x;c",
            "/../../v1/geodata/x",
            "/v1%2Fgeodata/x",
        ] {
            assert!(g.matches_request(p), "{p}");
        }
        for p in [
            "/v1/geo/x",
            "/v1/geodata",
            "/v1/x/../geo/x",
            "/v2/geodata/x",
        ] {
            assert!(!g.matches_request(p), "{p}");
        }
        assert_eq!(normalize_path("/a/b/../c/"), b"/a/c/");
        assert_eq!(normalize_path(""), b"/");
        assert_eq!(normalize_path("/a/.."), b"/");
    }
}
