//! Builds the web dashboard (`ui/`) into `OUT_DIR` and writes the manifest
//! `src/dashboard.rs` embeds: each file's path, content type, bytes and a
//! gzip copy made here, so the server compresses nothing at run time.
//!
//! `npm ci` runs only when `ui/package-lock.json` differs from the one last
//! installed; `npm run build` only when Cargo sees a UI source change. When
//! npm is missing or the build fails, the binary still builds: the manifest
//! is then empty and says why, and `/` serves a page saying how to get the
//! dashboard. `DASHBOARD_BUILD=required` turns that into a build error (the
//! test command sets it, so a broken UI build fails the tests instead of
//! hiding); `DASHBOARD_BUILD=skip` builds without the dashboard. (Not
//! `TALLY_*`: those name config keys of `tally serve`.)

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Files and folders whose change rebuilds the UI.
const UI_INPUTS: [&str; 7] = [
    "ui/src",
    "ui/index.html",
    "ui/public",
    "ui/package.json",
    "ui/package-lock.json",
    "ui/vite.config.ts",
    "ui/tsconfig.json",
];

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=DASHBOARD_BUILD");
    let mode = std::env::var("DASHBOARD_BUILD").unwrap_or_default();
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").expect("set by cargo"));
    let ui = manifest_dir.join("ui");
    for input in UI_INPUTS {
        // A path that does not exist would make Cargo rerun this every build.
        if manifest_dir.join(input).exists() {
            println!("cargo:rerun-if-changed={input}");
        }
    }
    let dist = out_dir.join("dashboard");
    let built = if mode == "skip" {
        Err("DASHBOARD_BUILD=skip was set".to_owned())
    } else {
        build_ui(&ui, &dist)
    };
    let manifest = match built {
        Ok(()) => manifest(&dist).unwrap_or_else(|err| panic!("dashboard manifest: {err}")),
        Err(reason) => {
            if mode == "required" {
                panic!("the dashboard could not be built: {reason}");
            }
            println!("cargo:warning=building without the web dashboard: {reason}");
            if mode != "skip" {
                // Try again at the next build even when no UI source changed
                // (npm may have been installed since): Cargo reruns a build
                // script whose watched file does not exist.
                let retry = out_dir.join("dashboard-retry");
                let _ = std::fs::remove_file(&retry);
                println!("cargo:rerun-if-changed={}", retry.display());
            }
            empty_manifest(&reason)
        }
    };
    std::fs::write(out_dir.join("dashboard_assets.rs"), manifest).expect("write manifest");
}

/// `npm ci` (when the lock changed) and `npm run build` into `dist`.
fn build_ui(ui: &Path, dist: &Path) -> Result<(), String> {
    if !ui.join("package.json").exists() {
        return Err("its sources (ui/) were missing".to_owned());
    }
    let npm = if cfg!(windows) { "npm.cmd" } else { "npm" };
    match Command::new(npm).arg("--version").output() {
        Ok(out) if out.status.success() => {}
        _ => return Err("npm was not found".to_owned()),
    }
    let lock = std::fs::read(ui.join("package-lock.json"))
        .map_err(|err| format!("ui/package-lock.json: {err}"))?;
    let stamp = ui.join("node_modules/.tally-installed-lock");
    if std::fs::read(&stamp).ok().as_deref() != Some(&lock[..]) {
        run(Command::new(npm).args(["ci", "--no-audit", "--no-fund"]).current_dir(ui), "npm ci")?;
        std::fs::write(&stamp, &lock).map_err(|err| format!("{}: {err}", stamp.display()))?;
    }
    let _ = std::fs::remove_dir_all(dist);
    run(
        Command::new(npm)
            .args(["run", "build", "--", "--outDir"])
            .arg(dist)
            .arg("--emptyOutDir")
            .current_dir(ui),
        "npm run build",
    )?;
    if !dist.join("index.html").exists() {
        return Err("npm run build wrote no index.html".to_owned());
    }
    Ok(())
}

fn run(command: &mut Command, what: &str) -> Result<(), String> {
    let out = command.output().map_err(|err| format!("{what}: {err}"))?;
    if out.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    // The tail says what failed; Cargo shows warnings one line each.
    let tail: Vec<&str> = stderr.lines().chain(stdout.lines()).rev().take(8).collect();
    for line in tail.iter().rev() {
        println!("cargo:warning={what}: {line}");
    }
    Err(format!("{what} failed ({})", out.status))
}

fn content_type(path: &Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()).unwrap_or("") {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" | "map" => "application/json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "woff2" => "font/woff2",
        "txt" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

fn compressible(content_type: &str) -> bool {
    content_type.starts_with("text/")
        || content_type.contains("json")
        || content_type.contains("svg")
}

/// The manifest of every file under `dist`, with a gzip copy beside each
/// compressible one that gzip makes smaller.
fn manifest(dist: &Path) -> std::io::Result<String> {
    let mut files = Vec::new();
    collect(dist, dist, &mut files)?;
    files.sort();
    let mut out = String::from("pub static BUILT: Result<&[Asset], &str> = Ok(&[\n");
    for relative in files {
        let path = dist.join(&relative);
        let content_type = content_type(&path);
        let body = std::fs::read(&path)?;
        let mut gzip = "None".to_owned();
        if compressible(content_type) && body.len() > 256 {
            let mut encoder =
                flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
            encoder.write_all(&body)?;
            let packed = encoder.finish()?;
            if packed.len() < body.len() {
                let gz_path = dist.join(format!("{relative}.gz"));
                std::fs::write(&gz_path, packed)?;
                gzip = format!("Some(include_bytes!({:?}))", gz_path.display().to_string());
            }
        }
        // Vite names what it fingerprints `assets/NAME-HASH.EXT`.
        let immutable = relative.starts_with("assets/");
        writeln!(
            out,
            "    Asset {{ path: {relative:?}, content_type: {content_type:?}, body: include_bytes!({:?}), gzip: {gzip}, immutable: {immutable} }},",
            path.display().to_string()
        )
        .expect("write to a String");
    }
    out.push_str("]);\n");
    Ok(out)
}

fn collect(root: &Path, dir: &Path, files: &mut Vec<String>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            collect(root, &path, files)?;
        } else if path.extension().is_none_or(|e| e != "gz") {
            let relative = path.strip_prefix(root).expect("under root");
            let relative = relative.to_string_lossy().replace('\\', "/");
            files.push(relative);
        }
    }
    Ok(())
}

fn empty_manifest(reason: &str) -> String {
    format!("pub static BUILT: Result<&[Asset], &str> = Err({reason:?});\n")
}
