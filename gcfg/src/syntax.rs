//! Turns gix-config's parse errors into messages an administrator can act on.
//!
//! gix-config reports the correct line number but describes the failure in
//! parser terms ("unexpected token ... while trying to parse a value"). This
//! module looks at the offending line and says what is actually wrong.

/// Explains why `line_text` (the line gix-config rejected) is not valid.
pub(crate) fn explain(line_text: &str) -> String {
    let trimmed = line_text.trim();
    if trimmed.starts_with('[') {
        return format!(
            "malformed section header `{trimmed}`; write [Name] or [Name \"subsection\"]"
        );
    }
    if let Some((_, value)) = trimmed.split_once('=') {
        if let Some(problem) = value_problem(value) {
            return format!("{problem} in `{trimmed}`");
        }
    }
    let name = trimmed.split('=').next().unwrap_or_default().trim();
    if name.is_empty() {
        return format!("missing key name in `{trimmed}`; write Key = value");
    }
    format!(
        "cannot parse `{trimmed}`; write Key = value, where Key starts with a letter \
         and contains only letters, digits and '-'"
    )
}

/// Finds the first quoting problem in a value: a bad escape or an unclosed quote.
fn value_problem(value: &str) -> Option<String> {
    let mut in_quotes = false;
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => in_quotes = !in_quotes,
            '\\' => match chars.next() {
                Some('"' | '\\' | 'n' | 't' | 'b') => {}
                // A backslash at the very end continues the value on the next line.
                None => return None,
                Some(other) => {
                    return Some(format!(
                        "unknown escape sequence `\\{other}`; use \\\", \\\\, \\n or \\t"
                    ))
                }
            },
            ';' | '#' if !in_quotes => return None,
            _ => {}
        }
    }
    in_quotes.then(|| "unterminated quoted string".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_each_kind_of_problem() {
        assert_eq!(
            explain("k = \"unterminated"),
            "unterminated quoted string in `k = \"unterminated`"
        );
        assert!(explain("[Applications").starts_with("malformed section header `[Applications`"));
        assert!(explain("k = \"a\\qb\"").starts_with("unknown escape sequence `\\q`"));
        assert!(explain("= 3").starts_with("missing key name"));
        assert!(explain("Bad_Key = 1").starts_with("cannot parse `Bad_Key = 1`"));
    }

    #[test]
    fn quotes_inside_comments_are_not_problems() {
        assert_eq!(value_problem(" 1 # it's \"fine"), None);
        assert_eq!(value_problem(" \"a # b\" ; c"), None);
        assert_eq!(
            value_problem(" \"a # b"),
            Some("unterminated quoted string".to_owned())
        );
    }
}
