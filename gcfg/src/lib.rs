//! Typed access to the gcfg configuration file `/etc/connect/connect.gcfg`
//! shared by the nameservice daemon and the content server.
//!
//! gcfg is git-config syntax, so parsing is left to [`gix_config`]'s
//! event parser, a maintained implementation of that syntax; this crate only
//! indexes the events and interprets values. It keeps what gix-config's
//! higher-level `File` does not offer: the line every key was set on, so
//! that every error can point the administrator at `path:line`.
//!
//! Semantics, following git:
//! - section names and keys are case-insensitive, subsection names are not;
//! - sections may repeat and add up; a single-valued key takes its last value
//!   ([`Config::string`]), a multi-valued key collects every value in file
//!   order ([`Config::strings`]);
//! - a key written alone on a line (no `=`) is `true` as a boolean and `""`
//!   as a string;
//! - include directives are not followed: the file stands alone.
//!
//! ```
//! use connect_gcfg::{Config, Key};
//!
//! let cfg = Config::parse(
//!     "[Server]\nAddress = :3939 ; listen here\n[Authorization]\nUserRoleMapping = yes\n",
//!     "connect.gcfg",
//! )?;
//! assert_eq!(cfg.string(Key::new("server", "address")).as_deref(), Some(":3939"));
//! assert_eq!(cfg.bool(Key::new("Authorization", "UserRoleMapping"))?, Some(true));
//! # Ok::<(), connect_gcfg::ConfigError>(())
//! ```

mod error;
mod syntax;
mod values;

use std::fmt;
use std::ops::RangeInclusive;
use std::path::Path;
use std::time::Duration;

use gix_config::parse::{EventRef, Events};

pub use error::{ConfigError, Result};

/// Names one key: section, optional subsection, key name.
///
/// Displays as `Section.Key` or `Section "sub".Key`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Key<'a> {
    /// Section name, matched case-insensitively.
    pub section: &'a str,
    /// Subsection name, matched case-sensitively (as git does).
    pub subsection: Option<&'a str>,
    /// Key name, matched case-insensitively.
    pub name: &'a str,
}

impl<'a> Key<'a> {
    /// A key in a plain `[Section]`.
    pub const fn new(section: &'a str, name: &'a str) -> Self {
        Self {
            section,
            subsection: None,
            name,
        }
    }

    /// A key in a `[Section "subsection"]`.
    pub const fn sub(section: &'a str, subsection: &'a str, name: &'a str) -> Self {
        Self {
            section,
            subsection: Some(subsection),
            name,
        }
    }

    /// The key the way an administrator sees it in the file: `[Section] Key`
    /// or `[Section "sub"] Key`, used in value errors.
    fn as_written(&self) -> String {
        match self.subsection {
            Some(sub) => format!("[{} \"{}\"] {}", self.section, sub, self.name),
            None => format!("[{}] {}", self.section, self.name),
        }
    }
}

impl fmt::Display for Key<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.subsection {
            Some(sub) => write!(f, "{} \"{}\".{}", self.section, sub, self.name),
            None => write!(f, "{}.{}", self.section, self.name),
        }
    }
}

/// One key as written in the file, for unknown-key warnings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Section name as spelled in the file.
    pub section: String,
    /// Subsection name, if the section header had one.
    pub subsection: Option<String>,
    /// Key name as spelled in the file.
    pub name: String,
    /// 1-based line the key is on.
    pub line: usize,
    /// The value after unquoting; empty for a key written without `=`.
    pub value: String,
}

/// One section header occurrence, in file order.
#[derive(Debug, Clone)]
struct Section {
    name: String,
    subsection: Option<String>,
}

/// One `Key = value` line (possibly continued over several lines).
#[derive(Debug, Clone)]
struct Item {
    /// Index into [`Config::sections`] of the header this key sits under.
    section: usize,
    name: String,
    line: usize,
    /// `None` when the key was written without `=`, which git reads as `true`.
    value: Option<String>,
}

/// The parsed configuration file.
///
/// Holds an index built from gix-config's parse events rather than the events
/// themselves: lookups need section/key matching and line numbers, and the
/// index answers both directly.
#[derive(Debug, Clone)]
pub struct Config {
    origin: String,
    sections: Vec<Section>,
    items: Vec<Item>,
}

impl Default for Config {
    fn default() -> Self {
        Self::empty()
    }
}

/// A key seen by the parser whose value is still being collected (values may
/// continue over several lines).
struct Pending {
    name: String,
    line: usize,
    has_separator: bool,
    raw: Vec<u8>,
}

impl Pending {
    fn finish(self, section: usize) -> Item {
        let value = self.has_separator.then(|| {
            String::from_utf8_lossy(&gix_config::value::normalize(self.raw.as_slice())).into_owned()
        });
        Item {
            section,
            name: self.name,
            line: self.line,
            value,
        }
    }
}

/// Number of line breaks in an event's text, to keep track of the line.
fn newlines(event: &EventRef<'_>) -> usize {
    event
        .to_bstr_lossy()
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
}

impl Config {
    /// Reads and parses the file at `path`.
    pub fn load(path: &Path) -> Result<Config> {
        let origin = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|source| ConfigError::Io {
            path: origin.clone(),
            source,
        })?;
        let text = String::from_utf8(bytes).map_err(|err| {
            let valid = &err.as_bytes()[..err.utf8_error().valid_up_to()];
            ConfigError::Syntax {
                path: origin.clone(),
                line: 1 + valid.iter().filter(|&&b| b == b'\n').count(),
                message: "the file is not valid UTF-8".to_owned(),
            }
        })?;
        Self::parse(&text, &origin)
    }

    /// Parses `text`; `origin` names it in error messages (normally the path).
    pub fn parse(text: &str, origin: &str) -> Result<Config> {
        let syntax_error = |line: usize, message: String| ConfigError::Syntax {
            path: origin.to_owned(),
            line,
            message,
        };
        let events = Events::from_bytes(text.as_bytes(), None).map_err(|err| {
            let line = err.line_number();
            let line_text = text.lines().nth(line.saturating_sub(1)).unwrap_or_default();
            syntax_error(line, syntax::explain(line_text))
        })?;

        let mut line = 1;
        // git refuses keys before the first section header; gix-config's
        // parser accepts them, so they are rejected here.
        for event in events.frontmatter() {
            if let EventRef::SectionValueName(name) = event {
                return Err(syntax_error(
                    line,
                    format!("key `{name}` is outside any section; put it under a [Section] header"),
                ));
            }
            line += newlines(&event);
        }

        let mut sections = Vec::new();
        let mut items = Vec::new();
        for section in events.sections() {
            let index = sections.len();
            if let EventRef::SectionHeader {
                name,
                separator,
                subsection_name,
            } = section.header()
            {
                // `[Section.sub]` is git's deprecated spelling of a subsection,
                // which git lowercases; `[Section "sub"]` keeps its case.
                let deprecated = separator.is_some_and(|s| s == ".");
                let subsection = subsection_name.map(|s| {
                    let s = s.to_string();
                    if deprecated {
                        s.to_ascii_lowercase()
                    } else {
                        s
                    }
                });
                sections.push(Section {
                    name: name.to_string(),
                    subsection,
                });
            }
            let mut pending: Option<Pending> = None;
            for event in section.body() {
                match event {
                    EventRef::SectionValueName(name) => {
                        if let Some(done) = pending.take() {
                            items.push(done.finish(index));
                        }
                        pending = Some(Pending {
                            name: name.to_string(),
                            line,
                            has_separator: false,
                            raw: Vec::new(),
                        });
                    }
                    EventRef::KeyValueSeparator => {
                        if let Some(p) = pending.as_mut() {
                            p.has_separator = true;
                        }
                    }
                    EventRef::ValueNotDone(part) => {
                        if let Some(p) = pending.as_mut() {
                            p.raw.extend_from_slice(part);
                        }
                    }
                    EventRef::Value(part) | EventRef::ValueDone(part) => {
                        if let Some(mut p) = pending.take() {
                            p.raw.extend_from_slice(part);
                            items.push(p.finish(index));
                        }
                    }
                    EventRef::Comment { .. }
                    | EventRef::SectionHeader { .. }
                    | EventRef::Newline(_)
                    | EventRef::Whitespace(_) => {}
                }
                line += newlines(&event);
            }
            if let Some(done) = pending.take() {
                items.push(done.finish(index));
            }
        }

        Ok(Config {
            origin: origin.to_owned(),
            sections,
            items,
        })
    }

    /// A configuration with no file: every getter returns `None` or empty,
    /// so the daemons fall back to their built-in defaults.
    pub fn empty() -> Config {
        Config {
            origin: "(no configuration file)".to_owned(),
            sections: Vec::new(),
            items: Vec::new(),
        }
    }

    /// The path (or origin) used in messages.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    fn matches(&self, item: &Item, key: Key<'_>) -> bool {
        let section = &self.sections[item.section];
        section.name.eq_ignore_ascii_case(key.section)
            && section.subsection.as_deref() == key.subsection
            && item.name.eq_ignore_ascii_case(key.name)
    }

    fn last(&self, key: Key<'_>) -> Option<&Item> {
        self.items.iter().rev().find(|item| self.matches(item, key))
    }

    /// Looks up the last value of `key` and interprets it with `parse`,
    /// wrapping a failure with the file, line, key and value.
    fn typed<T>(
        &self,
        key: Key<'_>,
        parse: impl FnOnce(Option<&str>) -> std::result::Result<T, String>,
    ) -> Result<Option<T>> {
        let Some(item) = self.last(key) else {
            return Ok(None);
        };
        parse(item.value.as_deref())
            .map(Some)
            .map_err(|message| ConfigError::Value {
                path: self.origin.clone(),
                line: Some(item.line),
                key: key.as_written(),
                value: item.value.clone().unwrap_or_default(),
                message,
            })
    }

    /// The last value of `key`; `Some("")` for a key written without `=`.
    pub fn string(&self, key: Key<'_>) -> Option<String> {
        self.last(key)
            .map(|item| item.value.clone().unwrap_or_default())
    }

    /// Every value of `key`, in file order, across repeated sections.
    pub fn strings(&self, key: Key<'_>) -> Vec<String> {
        self.items
            .iter()
            .filter(|item| self.matches(item, key))
            .map(|item| item.value.clone().unwrap_or_default())
            .collect()
    }

    /// The last value of `key` as a boolean: true/yes/on/1 or false/no/off/0,
    /// case-insensitive. A key with no `=` counts as true (git semantics).
    pub fn bool(&self, key: Key<'_>) -> Result<Option<bool>> {
        self.typed(key, |value| value.map_or(Ok(true), values::parse_bool))
    }

    /// The last value of `key` as a duration: `500ms`, `30s`, `3m`, `1h`,
    /// combinations such as `1h30m`, or a bare integer meaning seconds.
    pub fn duration(&self, key: Key<'_>) -> Result<Option<Duration>> {
        self.typed(key, |value| {
            values::parse_duration(value.unwrap_or_default())
        })
    }

    /// The last value of `key` as a `u32`.
    pub fn u32(&self, key: Key<'_>) -> Result<Option<u32>> {
        self.typed(key, |value| values::parse_u32(value.unwrap_or_default()))
    }

    /// The last value of `key` as a `u64`.
    pub fn u64(&self, key: Key<'_>) -> Result<Option<u64>> {
        self.typed(key, |value| values::parse_u64(value.unwrap_or_default()))
    }

    /// The last value of `key` as a finite `f64`.
    pub fn f64(&self, key: Key<'_>) -> Result<Option<f64>> {
        self.typed(key, |value| values::parse_f64(value.unwrap_or_default()))
    }

    /// An inclusive range written `LOW-HIGH` (e.g.
    /// `UidRange = 1000000000-1099999999`); error if LOW > HIGH or not two u32s.
    pub fn u32_range(&self, key: Key<'_>) -> Result<Option<RangeInclusive<u32>>> {
        self.typed(key, |value| {
            values::parse_u32_range(value.unwrap_or_default())
        })
    }

    /// Subsection names of a section in file order, deduplicated (for
    /// `[LDAP "corp"]`, `[LDAP "partners"]`).
    pub fn subsections(&self, section: &str) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for s in &self.sections {
            if let Some(sub) = &s.subsection {
                if s.name.eq_ignore_ascii_case(section) && !out.contains(sub) {
                    out.push(sub.clone());
                }
            }
        }
        out
    }

    /// True if `[Section]` or any `[Section "x"]` appears at all, even empty.
    pub fn has_section(&self, section: &str) -> bool {
        self.sections
            .iter()
            .any(|s| s.name.eq_ignore_ascii_case(section))
    }

    /// Every key in the file with its line, for warnings about unknown keys.
    pub fn entries(&self) -> Vec<Entry> {
        self.items
            .iter()
            .map(|item| {
                let section = &self.sections[item.section];
                Entry {
                    section: section.name.clone(),
                    subsection: section.subsection.clone(),
                    name: item.name.clone(),
                    line: item.line,
                    value: item.value.clone().unwrap_or_default(),
                }
            })
            .collect()
    }

    /// Line number (1-based) where the last value of the key is set, if present.
    pub fn line_of(&self, key: Key<'_>) -> Option<usize> {
        self.last(key).map(|item| item.line)
    }
}

#[cfg(test)]
mod tests;
