//! Job templates (minijinja: an email's subject and bodies, an upload's destination): the
//! run's context, rendered off the runtime threads under a fuel budget and an output cap, so
//! a runaway template fails its run instead of wedging the daemon.

use std::collections::BTreeMap;
use std::io::Write;

use super::{AttemptContext, StopSignal};
use crate::problem::Located;
use crate::secret::Secret;
use std::path::Path;

/// Template instructions one rendering may execute (minijinja's fuel): far above what a real
/// message needs (a few hundred), and used up by a runaway loop within about a tenth of a
/// second.
pub const FUEL: u64 = 1_000_000;
/// Largest rendered text (1 MiB).
pub const OUTPUT_LIMIT: usize = 1 << 20;

/// The values a template sees: `job`, `run_id`, `attempt`, `scheduled_for` (in the job's
/// zone), `date`, `time`, `timezone`, `host`, `env.NAME`; for a run fired by its parents,
/// `parents` (each with `job`, `run_id`, `status`, `exit_code`, `finished_at`, newest last)
/// and `parent` (the newest).
pub fn values(ctx: &AttemptContext<'_>, env: &BTreeMap<String, Secret>) -> minijinja::Value {
    let env: BTreeMap<&str, String> = env
        .iter()
        .map(|(k, v)| (k.as_str(), v.expose().to_string()))
        .collect();
    let zone = ctx.job.tz;
    let local = ctx.scheduled_for.with_timezone(&zone);
    let parents: Vec<minijinja::Value> = ctx
        .parents
        .iter()
        .map(|p| {
            minijinja::context! {
                job => &p.job,
                run_id => p.run_id,
                status => p.status.as_str(),
                exit_code => p.exit_code,
                finished_at => p.finished_at.with_timezone(&zone).format("%Y-%m-%d %H:%M:%S %Z").to_string(),
            }
        })
        .collect();
    minijinja::context! {
        job => &ctx.job.name,
        run_id => ctx.run_id,
        attempt => ctx.attempt,
        scheduled_for => local.format("%Y-%m-%d %H:%M:%S %Z").to_string(),
        date => local.format("%Y-%m-%d").to_string(),
        time => local.format("%H:%M").to_string(),
        timezone => zone.name(),
        host => host_name(),
        env => &env,
        parent => parents.last().cloned(),
        parents => parents,
    }
}

/// Renders `template` on a blocking thread (see [`render_bounded`]). The run does not wait
/// for it past its stop (timeout, shutdown, replaced): a rendering cannot be interrupted, so
/// it is left to end on its thread, which its step budget bounds.
pub async fn render(
    template: &str,
    values: &minijinja::Value,
    stop: &StopSignal,
) -> Result<String, String> {
    let template = template.to_string();
    let values = values.clone();
    let rendering = tokio::task::spawn_blocking(move || render_bounded(&template, &values));
    tokio::select! {
        r = rendering => r.unwrap_or_else(|e| Err(format!("template: the renderer failed: {e}"))),
        () = stop.soft.cancelled() => Err("template: stopped before its rendering ended".into()),
    }
}

/// Renders `template` with at most [`FUEL`] instructions and [`OUTPUT_LIMIT`] bytes of output.
pub fn render_bounded(template: &str, values: &minijinja::Value) -> Result<String, String> {
    let mut env = minijinja::Environment::new();
    env.set_fuel(Some(FUEL));
    let tmpl = env
        .template_from_str(template)
        .map_err(|e| format!("template: {e}"))?;
    let mut out = CappedWriter::default();
    match tmpl.render_captured_to(values, &mut out) {
        Ok(_) => String::from_utf8(out.bytes).map_err(|e| format!("template: {e}")),
        Err(_) if out.full => Err(format!(
            "template: its output exceeds {} KiB",
            OUTPUT_LIMIT >> 10
        )),
        Err(e) if e.kind() == minijinja::ErrorKind::OutOfFuel => Err(format!(
            "template: stopped after {FUEL} steps (a loop that runs away?)"
        )),
        Err(e) => Err(format!("template: {e}")),
    }
}

/// Checks a template's syntax (at config load).
pub fn check_template(template: &str) -> Result<(), String> {
    minijinja::Environment::new()
        .template_from_str(template)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Collects output up to [`OUTPUT_LIMIT`]; past it, writes fail.
#[derive(Debug, Default)]
struct CappedWriter {
    bytes: Vec<u8>,
    full: bool,
}

impl Write for CappedWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.bytes.len() + buf.len() > OUTPUT_LIMIT {
            self.full = true;
            return Err(std::io::Error::other("template output limit"));
        }
        self.bytes.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

pub(crate) fn template(
    inline: Option<String>,
    file: Option<String>,
    field: &str,
    base: &Path,
    at: &mut Located<'_>,
) -> Option<String> {
    let text = match (inline, file) {
        (Some(t), None) => t,
        (None, Some(f)) => {
            let path = base.join(&f);
            match std::fs::read_to_string(&path) {
                Ok(t) => t,
                Err(e) => {
                    at.push(
                        Some(&format!("{field}_file")),
                        format!("cannot read {}: {e}", path.display()),
                    );
                    return None;
                }
            }
        }
        (None, None) => return None,
        (Some(_), Some(_)) => {
            at.push(
                Some(field),
                format!("set `{field}` or `{field}_file`, not both"),
            );
            return None;
        }
    };
    if let Err(e) = check_template(&text) {
        at.push(Some(field), format!("template error: {e}"));
        return None;
    }
    Some(text)
}

/// This machine's name (the default node name, and `{{ host }}` in templates).
pub fn host_name() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "localhost".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runaway_templates_fail_fast_with_a_clear_error() {
        let v = minijinja::context! { job => "j" };
        assert_eq!(render_bounded("hi {{ job }}", &v).unwrap(), "hi j");
        let loops = "{% for a in range(10000) %}{% for b in range(10000) %}{% for c in range(10000) %}x{% endfor %}{% endfor %}{% endfor %}";
        let err = render_bounded(loops, &v).unwrap_err();
        assert!(err.contains("stopped after"), "{err}");
        let err = render_bounded(
            "{% for a in range(100000) %}{{ 'y' * 100 }}{% endfor %}",
            &v,
        )
        .unwrap_err();
        assert!(err.contains("exceeds 1024 KiB"), "{err}");
    }
}
