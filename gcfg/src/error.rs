//! The error type shared by loading, parsing and typed lookups.

/// Everything that can go wrong with the configuration file.
///
/// Every variant names the file, and where it is known the line, so that a
/// daemon can print the error as-is and the administrator knows where to look.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: cannot read the configuration file: {source}")]
    Io {
        /// The file that was being read.
        path: String,
        /// Why reading failed.
        source: std::io::Error,
    },
    /// The file is not valid gcfg (git-config) syntax.
    #[error("{path}:{line}: {message}")]
    Syntax {
        /// The file (or origin) being parsed.
        path: String,
        /// 1-based line of the offending text.
        line: usize,
        /// What is wrong and how to fix it.
        message: String,
    },
    /// A value is present but cannot be interpreted as the type the key needs.
    #[error("{}{key} = {value:?}: {message}", location(path, *line))]
    Value {
        /// The file (or origin) the value came from.
        path: String,
        /// 1-based line where the offending value was set, if it came from a file.
        line: Option<usize>,
        /// The key as `[Section] Key` or `[Section "sub"] Key`.
        key: String,
        /// The value as written (after unquoting).
        value: String,
        /// What is wrong, and what to write instead.
        message: String,
    },
}

/// Renders the `path:line: ` prefix of a value error, leaving out the line
/// when the value did not come from a known line.
fn location(path: &str, line: Option<usize>) -> String {
    match line {
        Some(line) => format!("{path}:{line}: "),
        None => format!("{path}: "),
    }
}

/// Shorthand used throughout the crate and by its callers.
pub type Result<T> = std::result::Result<T, ConfigError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn value_error_display_names_file_line_key_value_and_fix() {
        let err = ConfigError::Value {
            path: "/etc/connect/connect.gcfg".into(),
            line: Some(12),
            key: "[Authorization] UserRoleMapping".into(),
            value: "maybe".into(),
            message: "not a boolean; use true or false".into(),
        };
        assert_eq!(
            err.to_string(),
            "/etc/connect/connect.gcfg:12: [Authorization] UserRoleMapping = \"maybe\": \
             not a boolean; use true or false"
        );
    }

    #[test]
    fn value_error_without_line_still_names_file() {
        let err = ConfigError::Value {
            path: "test".into(),
            line: None,
            key: "[A] B".into(),
            value: "x".into(),
            message: "bad".into(),
        };
        assert_eq!(err.to_string(), "test: [A] B = \"x\": bad");
    }

    #[test]
    fn syntax_error_display_starts_with_path_and_line() {
        let err = ConfigError::Syntax {
            path: "/etc/connect/connect.gcfg".into(),
            line: 7,
            message: "unterminated quoted string".into(),
        };
        assert_eq!(
            err.to_string(),
            "/etc/connect/connect.gcfg:7: unterminated quoted string"
        );
    }
}
