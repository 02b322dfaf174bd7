//! The notifiers of `x-xtask.notify`, as data: where each one is told (a healthchecks-style ping
//! URL gets `/start`, itself on success and `/fail`; a webhook gets a JSON body), the URL as it
//! may be shown (userinfo, query and path tokens masked), and the curl config that sends it (the
//! URL and body reach curl on its stdin, never its command line). Pure: the sending is
//! `engine::notify`.
//!
//! ```yaml
//! x-xtask:
//!   notify:
//!     - https://hc-ping.com/eb095278-f28d-448d-87fb-7b75c171a6aa    # a ping (by its host or /ping/)
//!     - {url: "https://chat.example.com/hooks/T0KEN", kind: webhook}  # a JSON body
//! ```

use anyhow::{bail, Context, Result};
use serde_yaml::Value;

/// How a notifier is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// healthchecks.io and compatible (Uptime Kuma's push, Cronitor's ping…): `URL/start`,
    /// `URL` on success, `URL/fail` on failure; a short text body.
    Ping,
    /// A JSON body posted to the URL at the end of each task.
    Webhook,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub url: String,
    pub kind: Kind,
}

/// What happened, as a notifier hears it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    Start,
    Success,
    /// The task failed, or `check` found something (a warning or worse).
    Failure,
}

impl Event {
    pub fn as_str(self) -> &'static str {
        match self {
            Event::Start => "start",
            Event::Success => "success",
            Event::Failure => "failure",
        }
    }
}

/// Hosts whose URL path is itself the secret (anyone holding it can ping or post).
const TOKEN_HOSTS: [&str; 6] =
    ["hc-ping.com", "hchk.io", "hooks.slack.com", "discord.com", "discordapp.com", "api.telegram.org"];

/// One item of `x-xtask.notify`: a URL (its kind guessed: a ping for healthchecks' hosts and
/// paths with `/ping/`, else a webhook) or `{url, kind: ping|webhook}`.
pub fn target(v: &Value) -> Result<Target> {
    if let Some(url) = v.as_str() {
        let url = check_url(url)?;
        let host = host(&url);
        let ping = host == "hc-ping.com" || host == "hchk.io" || url.contains("/ping/") || url.contains("/api/push/");
        return Ok(Target { kind: if ping { Kind::Ping } else { Kind::Webhook }, url });
    }
    let map = v.as_mapping().context("every item must be a URL or {url, kind}")?;
    let (mut url, mut kind) = (None, Kind::Webhook);
    for (k, v) in map {
        match (k.as_str(), v.as_str()) {
            (Some("url"), Some(u)) => url = Some(check_url(u)?),
            (Some("kind"), Some("ping")) => kind = Kind::Ping,
            (Some("kind"), Some("webhook")) => kind = Kind::Webhook,
            (Some("kind"), _) => bail!("kind must be ping or webhook"),
            (Some(other), _) => bail!("unknown key {other:?} in a notifier; known: url, kind"),
            (None, _) => bail!("every key must be a string"),
        }
    }
    Ok(Target { url: url.context("a notifier needs its url")?, kind })
}

/// A notify URL: `http://` or `https://`, a host, printable ASCII without quotes, backslashes or
/// spaces (it goes to curl as one quoted config line, never on a command line).
pub fn check_url(url: &str) -> Result<String> {
    let rest = url.strip_prefix("https://").or_else(|| url.strip_prefix("http://"));
    let printable = url.bytes().all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\');
    if !rest.is_some_and(|r| !r.is_empty() && !r.starts_with('/')) || !printable {
        bail!("a notify URL must be http(s)://host/… in printable ASCII without quotes, spaces or backslashes");
    }
    Ok(url.to_string())
}

/// (scheme and `//`, authority, path, query) of a checked URL.
fn split(url: &str) -> (&str, &str, &str, Option<&str>) {
    let start = url.find("://").map(|i| i + 3).unwrap_or(0);
    let (scheme, rest) = url.split_at(start);
    let rest = rest.split('#').next().unwrap_or_default();
    let (rest, query) = match rest.split_once('?') {
        Some((r, q)) => (r, Some(q)),
        None => (rest, None),
    };
    let end = rest.find('/').unwrap_or(rest.len());
    (scheme, &rest[..end], &rest[end..], query)
}

/// The host of a checked URL (no userinfo, no port).
fn host(url: &str) -> &str {
    let authority = split(url).1;
    let host = authority.rsplit('@').next().unwrap_or(authority);
    host.split(':').next().unwrap_or(host)
}

/// Whether a path segment looks like a token: long, and letters mixed with digits.
fn tokenish(segment: &str) -> bool {
    segment.len() >= 16
        && segment.bytes().any(|b| b.is_ascii_digit())
        && segment.bytes().any(|b| b.is_ascii_alphabetic())
}

/// The URL as it may be printed: a password in the userinfo, every query value, the whole path
/// of a service whose path is the secret, and every token-like path segment replaced by `***`.
pub fn shown(url: &str) -> String {
    let (scheme, authority, path, query) = split(url);
    let authority = match authority.rsplit_once('@') {
        Some((user, host)) => format!("{}:***@{host}", user.split(':').next().unwrap_or_default()),
        None => authority.to_string(),
    };
    let path = if TOKEN_HOSTS.contains(&host(url)) && path.len() > 1 {
        "/***".to_string()
    } else {
        path.split('/').map(|s| if tokenish(s) { "***" } else { s }).collect::<Vec<_>>().join("/")
    };
    let query = query.map(|q| {
        let masked: Vec<String> =
            q.split('&').map(|kv| format!("{}=***", kv.split('=').next().unwrap_or_default())).collect();
        format!("?{}", masked.join("&"))
    });
    format!("{scheme}{authority}{path}{}", query.unwrap_or_default())
}

/// `text` with every secret part of `url` masked: the URL itself, its password, query values
/// and the path tokens [`shown`] hides (for curl's error messages).
pub fn scrub(text: &str, url: &str) -> String {
    let mut out = text.replace(url, &shown(url));
    let (_, authority, path, query) = split(url);
    let mut secrets: Vec<&str> = Vec::new();
    if let Some((user, _)) = authority.rsplit_once('@') {
        secrets.extend(user.split_once(':').map(|(_, pw)| pw));
    }
    secrets.extend(query.into_iter().flat_map(|q| q.split('&')).filter_map(|kv| kv.split_once('=').map(|(_, v)| v)));
    if TOKEN_HOSTS.contains(&host(url)) {
        secrets.extend(path.split('/').filter(|s| !s.is_empty()));
    } else {
        secrets.extend(path.split('/').filter(|s| tokenish(s)));
    }
    for s in secrets.into_iter().filter(|s| s.len() >= 4) {
        out = out.replace(s, "***");
    }
    out
}

/// Where a ping goes for `event` (None: a webhook hears no start).
pub fn ping_url(t: &Target, event: Event) -> Option<String> {
    let (scheme, authority, path, query) = split(&t.url);
    let suffix = match (t.kind, event) {
        (Kind::Webhook, Event::Start) => return None,
        (Kind::Webhook, _) | (Kind::Ping, Event::Success) => return Some(t.url.clone()),
        (Kind::Ping, Event::Start) => "/start",
        (Kind::Ping, Event::Failure) => "/fail",
    };
    let query = query.map(|q| format!("?{q}")).unwrap_or_default();
    Some(format!("{scheme}{authority}{}{suffix}{query}", path.trim_end_matches('/')))
}

/// A string as curl's config file quotes it: `\`, `"` and control characters escaped.
fn quoted(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The config curl reads on its stdin (`curl -q --config -`): a POST of `body` to `url`, failing
/// on an HTTP error, within `timeout_seconds`, no redirects, http(s) only.
pub fn curl_config(url: &str, body: &str, json: bool, timeout_seconds: u64) -> String {
    let content_type = if json { "application/json" } else { "text/plain; charset=utf-8" };
    format!(
        "url = {}\nrequest = \"POST\"\nheader = {}\ndata-binary = {}\nmax-time = {timeout_seconds}\n\
         connect-timeout = {}\nproto = \"=http,https\"\nsilent\nshow-error\nfail\noutput = \"/dev/null\"\n",
        quoted(url),
        quoted(&format!("Content-Type: {content_type}")),
        quoted(body),
        timeout_seconds.min(5),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Target {
        target(&serde_yaml::from_str(s).unwrap()).unwrap()
    }

    #[test]
    fn kinds_are_guessed_from_healthchecks_hosts_and_paths_or_given() {
        assert_eq!(t("https://hc-ping.com/abc").kind, Kind::Ping);
        assert_eq!(t("http://127.0.0.1:8000/ping/abc").kind, Kind::Ping);
        assert_eq!(t("https://kuma.example/api/push/Xy12?status=up").kind, Kind::Ping);
        assert_eq!(t("https://chat.example/hooks/x").kind, Kind::Webhook);
        assert_eq!(t("{url: 'https://h/x', kind: ping}").kind, Kind::Ping);
        for bad in ["{url: 'https://h/x', kind: mail}", "{url: 'https://h/x', secret: 1}", "{kind: ping}", "7"] {
            assert!(target(&serde_yaml::from_str(bad).unwrap()).is_err(), "{bad}");
        }
    }

    #[test]
    fn pings_go_to_start_the_url_and_fail_and_webhooks_hear_only_the_end() {
        let p = Target { url: "https://hc-ping.com/uuid/?rid=1".into(), kind: Kind::Ping };
        assert_eq!(ping_url(&p, Event::Start).unwrap(), "https://hc-ping.com/uuid/start?rid=1");
        assert_eq!(ping_url(&p, Event::Success).unwrap(), "https://hc-ping.com/uuid/?rid=1");
        assert_eq!(ping_url(&p, Event::Failure).unwrap(), "https://hc-ping.com/uuid/fail?rid=1");
        let w = Target { url: "https://h/hook".into(), kind: Kind::Webhook };
        assert_eq!((ping_url(&w, Event::Start), ping_url(&w, Event::Failure).unwrap()), (None, w.url.clone()));
    }

    #[test]
    fn secrets_in_urls_are_never_shown() {
        assert_eq!(shown("https://hc-ping.com/eb095278-f28d-448d-87fb-7b75c171a6aa"), "https://hc-ping.com/***");
        assert_eq!(shown("https://alice:S3cret@h.example/hook"), "https://alice:***@h.example/hook");
        assert_eq!(shown("https://h.example/hook?token=abc&x=1"), "https://h.example/hook?token=***&x=***");
        assert_eq!(
            shown("https://chat.example/hooks/8f3kd93kdk39dk3l/in"),
            "https://chat.example/hooks/***/in",
            "a token-like segment of any host"
        );
        assert_eq!(shown("https://hooks.slack.com/services/T0/B0/XXXX"), "https://hooks.slack.com/***");
        assert_eq!(shown("http://127.0.0.1:8080/ping/short"), "http://127.0.0.1:8080/ping/short");
        let url = "https://u:pw12345@hooks.slack.com/services/T0AAA/B0BBB/secretvalue?k=tok3n";
        let said = scrub(&format!("curl: (22) {url} returned 500; pw12345 secretvalue tok3n"), url);
        for secret in ["pw12345", "secretvalue", "tok3n", "T0AAA"] {
            assert!(!said.contains(secret), "{said}");
        }
        assert!(said.contains("returned 500"), "{said}");
    }

    #[test]
    fn the_curl_config_quotes_what_it_carries() {
        let c = curl_config("https://h/x?a=1", "{\"m\":\"a\\\\b\"}\nline2", true, 10);
        assert!(c.starts_with("url = \"https://h/x?a=1\"\n"), "{c}");
        assert!(c.contains("data-binary = \"{\\\"m\\\":\\\"a\\\\\\\\b\\\"}\\nline2\"\n"), "{c}");
        assert!(c.contains("header = \"Content-Type: application/json\"\n"));
        assert!(c.contains("max-time = 10\n") && c.contains("connect-timeout = 5\n") && c.contains("\nfail\n"));
        assert_eq!(c.lines().filter(|l| l.starts_with("url")).count(), 1, "a body cannot add a url line");
    }
}
