//! `manifest.json`: the app mode, the entrypoint and the files it names,
//! read as Posit Connect's publishing tools write it and checked against
//! the unpacked bundle.

use std::fs;
use std::io;
use std::path::Path;

use serde::Deserialize;

use super::unpack::clean_path;
use super::*;

/// manifest.json may list every file with its checksum: allow big ones, but
/// not a memory exhaustion.
const MAX_MANIFEST_BYTES: u64 = 64 << 20;

#[derive(Deserialize)]
struct RawManifest {
    version: Option<serde_json::Value>,
    metadata: Option<RawMetadata>,
    python: Option<RawPython>,
}

#[derive(Deserialize)]
struct RawMetadata {
    appmode: Option<String>,
    entrypoint: Option<String>,
    primary_html: Option<String>,
}

#[derive(Deserialize)]
struct RawPython {
    version: Option<String>,
    package_manager: Option<RawPackageManager>,
}

#[derive(Deserialize)]
struct RawPackageManager {
    package_file: Option<String>,
}

/// Posit Connect's modes that this server does not run, with what to do.
fn unsupported_mode_hint(mode: &str) -> Option<&'static str> {
    let hint = match mode {
        "shiny" | "rmd-shiny" | "api" => {
            "it is R content (Shiny, R Markdown or Plumber), and this server runs no R"
        }
        "rmd-static" | "quarto-static" | "jupyter-static" => {
            "documents are not rendered here; render it where you write it and publish \
             the output with app mode \"static\""
        }
        "quarto-shiny" => "interactive Quarto documents are not supported",
        "python-dash" => {
            "a Dash app is a Flask app: publish it with app mode \"python-api\" and \
             entrypoint \"<module>:app.server\""
        }
        "python-bokeh" | "python-panel" | "python-gradio" | "jupyter-voila" => {
            "this kind of Python app is not supported yet"
        }
        "tensorflow-saved-model" => "TensorFlow models are not supported",
        _ => return None,
    };
    Some(hint)
}

/// Reads and checks `bundle_dir/manifest.json`: the app mode, the entry point
/// (files it names must exist in the bundle), the Python requirements file
/// and, for Node.js, whether there is a package.json and a lockfile.
///
/// Defaults when the manifest leaves them out: Python modes `app:app`
/// (`module` alone means `module:app`, except for python-api, whose runner
/// then tries `app`, then `application`; `module.py` is taken for `module`),
/// streamlit
/// `app.py` or `streamlit_app.py`, nodejs package.json's `main` or the first
/// of `server.js`, `app.js`, `index.js`, `main.js`, static `primary_html`, then
/// `metadata.entrypoint`, then `index.html`. The requirements file is
/// `python.package_manager.package_file`, else `requirements.txt` if present.
pub fn read_manifest(bundle_dir: &Path) -> Result<Manifest, BundleError> {
    let path = bundle_dir.join("manifest.json");
    let text = match fs::symlink_metadata(&path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(manifest_error(match nested_manifest(bundle_dir) {
                // The usual mistake: archiving the directory, not its contents.
                Some(dir) => format!(
                    "the bundle has no manifest.json at its root, but \"{dir}/\" has one: \
                     archive the directory's contents, not the directory \
                     (`tar -czf bundle.tar.gz -C {dir} .`)"
                ),
                None => "the bundle has no manifest.json at its root; create one with \
                         rsconnect-python (`rsconnect write-manifest ...`) or write it by \
                         hand, e.g. {\"version\": 1, \"metadata\": {\"appmode\": \
                         \"python-api\", \"entrypoint\": \"app:app\"}}"
                    .to_owned(),
            }));
        }
        Err(source) => {
            return Err(BundleError::Io {
                action: "cannot read",
                path,
                source,
            })
        }
        Ok(meta) if !meta.is_file() => {
            return Err(manifest_error("manifest.json must be a regular file"))
        }
        Ok(meta) if meta.len() > MAX_MANIFEST_BYTES => {
            return Err(manifest_error(format!(
                "the file is {} bytes; the limit is {MAX_MANIFEST_BYTES}",
                meta.len()
            )))
        }
        Ok(_) => fs::read(&path).map_err(|source| BundleError::Io {
            action: "cannot read",
            path: path.clone(),
            source,
        })?,
    };
    let raw: RawManifest = serde_json::from_slice(&text).map_err(|e| {
        manifest_error(if e.is_syntax() || e.is_eof() {
            format!("not valid JSON: {e}")
        } else {
            format!("unexpected content: {e}")
        })
    })?;

    match &raw.version {
        None => {}
        Some(v) if v.as_u64() == Some(1) => {}
        Some(v) => {
            return Err(manifest_error(format!(
                "\"version\" is {v}; this server reads version 1 manifests"
            )))
        }
    }
    let metadata = raw.metadata.ok_or_else(|| {
        manifest_error(format!(
            "\"metadata\" is missing; it must at least give \"appmode\" (one of {})",
            supported_modes()
        ))
    })?;
    let mode_name = metadata.appmode.as_deref().ok_or_else(|| {
        manifest_error(format!(
            "\"metadata.appmode\" is missing; set it to one of {}",
            supported_modes()
        ))
    })?;
    let app_mode = match AppMode::parse(mode_name) {
        Some(mode) => mode,
        None => {
            return Err(match unsupported_mode_hint(mode_name) {
                Some(hint) => BundleError::UnsupportedMode {
                    mode: mode_name.to_owned(),
                    hint: hint.to_owned(),
                },
                None => manifest_error(format!(
                    "unknown app mode \"{mode_name}\" in \"metadata.appmode\"; use one of {}",
                    supported_modes()
                )),
            })
        }
    };
    let given = metadata
        .entrypoint
        .as_deref()
        .map(str::trim)
        .filter(|e| !e.is_empty());

    let mut manifest = Manifest {
        app_mode,
        entrypoint: String::new(),
        python_requirements: None,
        primary_html: None,
        python_version: None,
        package_json: false,
        npm_lockfile: None,
    };
    match app_mode {
        AppMode::Static => {
            let page = match metadata.primary_html.as_deref().or(given) {
                Some(page) => bundle_file(bundle_dir, page, "metadata.primary_html")?,
                None => bundle_file(bundle_dir, "index.html", "metadata.primary_html").map_err(
                    |_| {
                        manifest_error(
                            "\"metadata.primary_html\" is missing and the bundle has no \
                             index.html; set it to the page to show first",
                        )
                    },
                )?,
            };
            manifest.entrypoint = page.clone();
            manifest.primary_html = Some(page);
        }
        AppMode::PythonApi | AppMode::PythonFastapi | AppMode::PythonShiny => {
            manifest.entrypoint = python_entrypoint(bundle_dir, app_mode, given)?;
        }
        AppMode::PythonStreamlit => {
            manifest.entrypoint = match given {
                Some(file) => bundle_file(bundle_dir, file, "metadata.entrypoint")?,
                None => first_existing(bundle_dir, &["app.py", "streamlit_app.py"]).ok_or_else(
                    || {
                        manifest_error(
                            "\"metadata.entrypoint\" is missing and the bundle has no app.py \
                             or streamlit_app.py; set it to your Streamlit script",
                        )
                    },
                )?,
            };
        }
        AppMode::Nodejs => {
            manifest.package_json = is_file(&bundle_dir.join("package.json"));
            manifest.npm_lockfile = ["package-lock.json", "npm-shrinkwrap.json"]
                .into_iter()
                .find(|f| is_file(&bundle_dir.join(f)))
                .map(str::to_owned);
            if manifest.npm_lockfile.is_some() && !manifest.package_json {
                return Err(manifest_error(format!(
                    "the bundle has {} but no package.json; include package.json",
                    manifest.npm_lockfile.as_deref().unwrap_or_default()
                )));
            }
            manifest.entrypoint = match given {
                Some(file) => bundle_file(bundle_dir, file, "metadata.entrypoint")?,
                None => node_default_entrypoint(bundle_dir, manifest.package_json)?,
            };
        }
    }
    if app_mode.is_python() {
        let python = raw.python;
        manifest.python_version = python.as_ref().and_then(|p| p.version.clone());
        let package_file = python
            .and_then(|p| p.package_manager)
            .and_then(|pm| pm.package_file)
            .filter(|f| !f.trim().is_empty());
        manifest.python_requirements = match package_file {
            Some(file) => Some(bundle_file(
                bundle_dir,
                file.trim(),
                "python.package_manager.package_file",
            )?),
            None => first_existing(bundle_dir, &["requirements.txt"]),
        };
    }
    Ok(manifest)
}

/// The only top-level directory, if it holds a manifest.json.
fn nested_manifest(bundle_dir: &Path) -> Option<String> {
    let mut children = fs::read_dir(bundle_dir).ok()?;
    let only = children.next()?.ok()?;
    if children.next().is_some() || !is_file(&only.path().join("manifest.json")) {
        return None;
    }
    Some(only.file_name().to_string_lossy().into_owned())
}

fn is_file(path: &Path) -> bool {
    fs::metadata(path).map(|m| m.is_file()).unwrap_or(false)
}

fn first_existing(bundle_dir: &Path, names: &[&str]) -> Option<String> {
    names
        .iter()
        .find(|n| bundle_file(bundle_dir, n, "").is_ok())
        .map(|n| (*n).to_owned())
}

/// Checks that `name` (from the manifest's `field`) is a regular file inside
/// the bundle, and returns it normalized (no `./`, no doubled slashes).
fn bundle_file(bundle_dir: &Path, name: &str, field: &str) -> Result<String, BundleError> {
    let rel = match clean_path(Path::new(name)) {
        Ok(rel) if !rel.as_os_str().is_empty() => rel,
        _ => {
            return Err(manifest_error(format!(
                "\"{field}\" is \"{name}\"; it must name a file inside the bundle, relative \
                 to its root and without \"..\""
            )))
        }
    };
    let missing = || {
        manifest_error(format!(
            "\"{field}\" names \"{name}\", which is not a file in the bundle; check the \
             name, or add the file to the bundle"
        ))
    };
    let full = bundle_dir.join(&rel);
    if !is_file(&full) {
        return Err(missing());
    }
    // A symbolic link in the bundle could lead out of it; unpack() refuses
    // such links, but this function may be handed any directory.
    match (fs::canonicalize(&full), fs::canonicalize(bundle_dir)) {
        (Ok(file), Ok(root)) if file.starts_with(&root) => {}
        _ => return Err(missing()),
    }
    // `name` was a &str and clean_path only drops parts of it.
    Ok(rel.to_string_lossy().into_owned())
}

/// A dotted Python name: `pkg.module` or `app.server`.
fn is_dotted_identifier(s: &str) -> bool {
    !s.is_empty()
        && s.split('.').all(|part| {
            let mut chars = part.chars();
            matches!(chars.next(), Some(c) if c == '_' || c.is_alphabetic())
                && chars.all(|c| c == '_' || c.is_alphanumeric())
        })
}

fn python_entrypoint(
    bundle_dir: &Path,
    mode: AppMode,
    given: Option<&str>,
) -> Result<String, BundleError> {
    let Some(given) = given else {
        return Ok("app:app".to_owned());
    };
    let (mut module, object) = match given.split_once(':') {
        Some((module, object)) => (module.to_owned(), Some(object)),
        None => (given.to_owned(), None),
    };
    // Publishers often name the file; take "app.py" (if it exists) for "app".
    if object.is_none() && module.ends_with(".py") {
        if let Ok(file) = bundle_file(bundle_dir, &module, "metadata.entrypoint") {
            module = file.trim_end_matches(".py").replace('/', ".");
        }
    }
    let object_ok = object.is_none_or(is_dotted_identifier);
    if !is_dotted_identifier(&module) || !object_ok {
        return Err(manifest_error(format!(
            "\"metadata.entrypoint\" is \"{given}\"; for app mode \"{mode}\" it must be \
             \"module:object\", e.g. \"app:app\" for the object `app` in app.py (module \
             and object are Python names, with dots for packages and attributes)"
        )));
    }
    Ok(match (object, mode) {
        (Some(object), _) => format!("{module}:{object}"),
        // The WSGI runner looks for `app`, then `application` (Django's name).
        (None, AppMode::PythonApi) => module,
        (None, _) => format!("{module}:app"),
    })
}

fn node_default_entrypoint(bundle_dir: &Path, package_json: bool) -> Result<String, BundleError> {
    if package_json {
        let path = bundle_dir.join("package.json");
        let text = fs::read(&path).map_err(|source| BundleError::Io {
            action: "cannot read",
            path,
            source,
        })?;
        let package: serde_json::Value = serde_json::from_slice(&text).map_err(|e| {
            manifest_error(format!(
                "package.json (read for the entry point) is not valid JSON: {e}"
            ))
        })?;
        if let Some(main) = package.get("main").and_then(|m| m.as_str()) {
            return bundle_file(bundle_dir, main, "package.json's \"main\"");
        }
    }
    first_existing(bundle_dir, &["server.js", "app.js", "index.js", "main.js"]).ok_or_else(|| {
        manifest_error(
            "\"metadata.entrypoint\" is missing, package.json names no \"main\" and the \
             bundle has no server.js, app.js, index.js or main.js; set it to the file that \
             starts the server",
        )
    })
}
