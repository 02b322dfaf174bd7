//! Telling the notifiers of `x-xtask.notify` (model/notify.rs) that a task started, succeeded
//! or failed, through `curl` (found with `which`, run by `engine::process`): `curl -q --config -`
//! with the URL and the body in the config on its stdin, so neither shows in `ps`. Best effort by
//! design: a notifier that fails, refuses or hangs (each is given `XTASK_NOTIFY_TIMEOUT` seconds,
//! default 10) is a warning with its URL masked, never the task's failure.

use crate::engine::process::Tool;
use crate::model::notify::{self, Event, Kind, Target};

/// The variable that bounds each notification, in seconds.
pub const TIMEOUT_VAR: &str = "XTASK_NOTIFY_TIMEOUT";

pub struct Notifier {
    targets: Vec<Target>,
    project: String,
    host: String,
    timeout_seconds: u64,
}

/// This machine's name, for the message (empty when unknown).
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_string()).unwrap_or_default()
}

impl Notifier {
    pub fn new(targets: Vec<Target>, project: &str) -> Notifier {
        let timeout_seconds = crate::environment::var(TIMEOUT_VAR).and_then(|v| v.parse().ok()).filter(|t| *t > 0);
        Notifier {
            targets,
            project: project.to_string(),
            host: hostname(),
            timeout_seconds: timeout_seconds.unwrap_or(10),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.targets.is_empty()
    }

    /// The JSON a webhook receives.
    pub fn payload(&self, task: &str, event: Event, message: &str, details: &serde_json::Value) -> serde_json::Value {
        let at = time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339);
        serde_json::json!({
            "project": self.project,
            "host": self.host,
            "task": task,
            "event": event.as_str(),
            "message": message,
            "at": at.unwrap_or_default(),
            "details": details,
        })
    }

    /// Tells every notifier; each failure is printed as a warning (URL masked) and otherwise
    /// ignored.
    pub fn send(&self, task: &str, event: Event, message: &str, details: &serde_json::Value) {
        if self.targets.is_empty() {
            return;
        }
        let curl = match Tool::find("curl", "to notify (x-xtask.notify)") {
            Ok(c) => c,
            Err(e) => return eprintln!("warning: not notified of {task} {}: {e:#}", event.as_str()),
        };
        for t in &self.targets {
            let Some(url) = notify::ping_url(t, event) else { continue };
            let (body, json) = match t.kind {
                Kind::Ping => (format!("{task} {} on {}: {message}", event.as_str(), self.host), false),
                Kind::Webhook => (self.payload(task, event, message, details).to_string(), true),
            };
            let config = notify::curl_config(&url, &body, json, self.timeout_seconds);
            let args = ["-q", "--config", "-"].map(String::from);
            if let Err(e) = curl.output_with_input(&args, config.as_bytes()) {
                let why = notify::scrub(&format!("{e:#}"), &url);
                eprintln!("warning: notify {} ({task} {}): {why}", notify::shown(&url), event.as_str());
            }
        }
    }
}
