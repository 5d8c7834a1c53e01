//! Headless Chromium (Debian's `chromium`) driven through the DevTools protocol
//! (chromiumoxide): pages are loaded, their DOM read after scripts ran, screenshots taken at a
//! given width, and every console error, uncaught exception and failed load is collected.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chromiumoxide::cdp::browser_protocol::emulation::{
    MediaFeature, SetDeviceMetricsOverrideParams, SetEmulatedMediaParams,
};
use chromiumoxide::cdp::browser_protocol::log::{EnableParams, EventEntryAdded, LogEntryLevel};
use chromiumoxide::cdp::js_protocol::runtime::{
    ConsoleApiCalledType, EventConsoleApiCalled, EventExceptionThrown,
};
use chromiumoxide::page::ScreenshotParams;
use chromiumoxide::{Browser, BrowserConfig, Page};
use futures_util::StreamExt as _;

pub const CHROMIUM: &str = "/usr/bin/chromium";

/// A headless Chromium with one tab.
pub struct Chromium {
    rt: tokio::runtime::Runtime,
    browser: Browser,
    page: Page,
    /// Console errors, exceptions and failed loads seen on any page so far.
    problems: Arc<Mutex<Vec<String>>>,
    _profile: tempfile::TempDir,
}

impl Chromium {
    pub fn launch() -> Self {
        Self::launch_with(&[])
    }

    /// Launches with more command-line switches and their values (`("host-resolver-rules",
    /// "MAP evil.example 127.0.0.1")`).
    pub fn launch_with(switches: &[(&str, &str)]) -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let profile = tempfile::tempdir().unwrap();
        let (browser, page, problems) = rt.block_on(async {
            let config = BrowserConfig::builder()
                .chrome_executable(CHROMIUM)
                .new_headless_mode()
                .no_sandbox()
                .user_data_dir(profile.path())
                .arg("--disable-gpu")
                .arg("--disable-dev-shm-usage")
                .args(switches.iter().copied())
                .window_size(1280, 900)
                .viewport(None)
                .build()
                .unwrap();
            let (browser, mut handler) = Browser::launch(config).await.unwrap();
            tokio::spawn(async move { while handler.next().await.is_some() {} });
            let page = browser.new_page("about:blank").await.unwrap();
            let problems = Arc::new(Mutex::new(Vec::new()));
            watch_problems(&page, &problems).await;
            (browser, page, problems)
        });
        Self {
            rt,
            browser,
            page,
            problems,
            _profile: profile,
        }
    }

    /// Loads `url` at `width` px wide and waits for it to load.
    pub fn open(&self, url: &str, width: u32) {
        self.rt.block_on(async {
            let mobile = width < 600;
            self.page
                .execute(SetDeviceMetricsOverrideParams::new(width, 900, 1.0, mobile))
                .await
                .unwrap();
            self.page.goto(url).await.unwrap();
            self.page.wait_for_navigation().await.unwrap();
        });
    }

    /// The value of the JavaScript expression `js` on the page.
    pub fn eval<T: serde::de::DeserializeOwned>(&self, js: &str) -> T {
        self.rt.block_on(async {
            self.page
                .evaluate(js)
                .await
                .unwrap_or_else(|e| panic!("{js}: {e}"))
                .into_value::<T>()
                .unwrap_or_else(|e| panic!("{js}: {e}"))
        })
    }

    /// The value of `js`, or `None` while the page cannot answer (it is navigating).
    fn try_eval<T: serde::de::DeserializeOwned>(&self, js: &str) -> Option<T> {
        self.rt
            .block_on(async { self.page.evaluate(js).await.ok()?.into_value::<T>().ok() })
    }

    /// Polls `js` (a boolean expression) until it holds, or panics after `timeout`.
    pub fn wait_until(&self, js: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.try_eval::<bool>(js) != Some(true) {
            assert!(Instant::now() < deadline, "timed out waiting for `{js}`");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Presses `key` (`"Tab"`, `"Enter"`) on the page, as a keyboard would.
    pub fn press(&self, key: &str) {
        self.rt.block_on(async {
            let body = self.page.find_element("body").await.unwrap();
            body.press_key(key).await.unwrap();
        });
    }

    /// Makes the page's `prefers-color-scheme` dark (or light).
    pub fn dark(&self, on: bool) {
        let scheme = if on { "dark" } else { "light" };
        let params = SetEmulatedMediaParams::builder()
            .features(vec![MediaFeature::new("prefers-color-scheme", scheme)])
            .build();
        self.rt
            .block_on(async { self.page.execute(params).await.unwrap() });
    }

    /// The page's URL now.
    pub fn url(&self) -> String {
        self.eval("location.href")
    }

    /// Runs `js` (which navigates, e.g. submits a form) and waits for the next page (which
    /// may have the same URL: the old document is marked).
    pub fn navigate_by(&self, js: &str) {
        self.eval::<bool>(&format!("window.hourglassOld = true; {js}; true"));
        self.wait_until(
            "window.hourglassOld !== true && document.readyState === 'complete'",
            Duration::from_secs(20),
        );
    }

    /// A PNG of the whole page, written to `dir/name.png`.
    pub fn screenshot(&self, dir: &std::path::Path, name: &str) -> PathBuf {
        let png = self.rt.block_on(async {
            self.page
                .screenshot(ScreenshotParams::builder().full_page(true).build())
                .await
                .unwrap()
        });
        std::fs::create_dir_all(dir).unwrap();
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).unwrap();
        path
    }

    /// The problems seen so far (and forgets them). The browser's events come asynchronously:
    /// a marker error is logged last and waited for, so that what the page did before it has
    /// been heard.
    pub fn take_problems(&self) -> Vec<String> {
        const MARK: &str = "hourglass-test-barrier";
        if self.try_eval::<bool>(&format!("console.error('{MARK}'), true")) == Some(true) {
            let deadline = Instant::now() + Duration::from_secs(10);
            while !self
                .problems
                .lock()
                .unwrap()
                .iter()
                .any(|p| p.contains(MARK))
            {
                assert!(Instant::now() < deadline, "the console's marker never came");
                std::thread::sleep(Duration::from_millis(10));
            }
            // The exception and log streams are read by tasks of their own.
            std::thread::sleep(Duration::from_millis(100));
        }
        let mut seen = std::mem::take(&mut *self.problems.lock().unwrap());
        seen.retain(|p| !p.contains(MARK));
        seen
    }
}

impl Drop for Chromium {
    fn drop(&mut self) {
        let browser = &mut self.browser;
        self.rt.block_on(async {
            let _ = browser.close().await;
            let _ = browser.wait().await;
        });
    }
}

/// Collects console errors, uncaught exceptions and log errors (failed loads, CSP
/// violations) of `page` into `problems`.
async fn watch_problems(page: &Page, problems: &Arc<Mutex<Vec<String>>>) {
    page.execute(EnableParams::default()).await.unwrap();
    let mut console = page
        .event_listener::<EventConsoleApiCalled>()
        .await
        .unwrap();
    let mut thrown = page.event_listener::<EventExceptionThrown>().await.unwrap();
    let mut log = page.event_listener::<EventEntryAdded>().await.unwrap();
    let p = Arc::clone(problems);
    tokio::spawn(async move {
        while let Some(e) = console.next().await {
            if matches!(
                e.r#type,
                ConsoleApiCalledType::Error | ConsoleApiCalledType::Warning
            ) {
                let args: Vec<String> = e.args.iter().map(|a| format!("{:?}", a.value)).collect();
                p.lock()
                    .unwrap()
                    .push(format!("console: {}", args.join(" ")));
            }
        }
    });
    let p = Arc::clone(problems);
    tokio::spawn(async move {
        while let Some(e) = thrown.next().await {
            p.lock()
                .unwrap()
                .push(format!("exception: {}", e.exception_details.text));
        }
    });
    let p = Arc::clone(problems);
    tokio::spawn(async move {
        while let Some(e) = log.next().await {
            if matches!(e.entry.level, LogEntryLevel::Error | LogEntryLevel::Warning) {
                p.lock().unwrap().push(format!(
                    "log: {} {}",
                    e.entry.text,
                    e.entry.url.clone().unwrap_or_default()
                ));
            }
        }
    });
}

/// Where screenshots go: `HOURGLASS_SCREENSHOTS` (the committed ones in `docs/`, by
/// `scripts/screenshots.sh`), else `target/screenshots`.
pub fn screenshot_dir() -> PathBuf {
    std::env::var_os("HOURGLASS_SCREENSHOTS").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/screenshots"),
        PathBuf::from,
    )
}
