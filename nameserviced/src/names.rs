//! How identity-provider names become Unix names.
//!
//! The rules (documented for administrators in the README):
//!
//! Usernames, strict, because a username is what people and programs match on:
//! 1. With `StripDomain` (the default) an `@domain` suffix is dropped
//!    (`Alice@corp.example` becomes `alice`); without it `@` becomes `_`.
//! 2. ASCII letters are lower-cased.
//! 3. What is left must be ASCII letters, digits, `_`, `.` or `-`, start with a
//!    letter or `_` (so never all-numeric, never `.` or `..`), and be at most
//!    `MaxNameLength` (32) bytes. Anything else is refused with an error that
//!    says which rule failed; nothing is silently rewritten, so two different
//!    people can never be folded into one name by accident.
//! 4. Reserved and local names are refused (see [`Policy`]).
//!
//! Group names, lenient, because a group with an odd display name must not
//! block a login: lower-cased, every other character replaced by `_`, a `_`
//! prefix when the name does not start with a letter or `_`, cut to the
//! maximum length.
//!
//! When two identities normalise to the same name, the first keeps it and the
//! next gets `name-2`, then `name-3`, … (see [`with_suffix`]): deterministic
//! and stable, because the choice is stored.

use std::collections::HashSet;
use std::fmt;

/// Names no federated identity may take, whatever /etc/passwd says today.
pub const BUILTIN_RESERVED: &[&str] = &[
    "root",
    "daemon",
    "bin",
    "sys",
    "sync",
    "games",
    "man",
    "lp",
    "mail",
    "news",
    "uucp",
    "proxy",
    "www-data",
    "backup",
    "list",
    "irc",
    "gnats",
    "nobody",
    "nogroup",
    "adm",
    "admin",
    "administrator",
    "sudo",
    "wheel",
    "staff",
    "users",
    "shadow",
    "utmp",
    "tty",
    "disk",
    "kmem",
    "dialout",
    "audio",
    "video",
    "operator",
    "messagebus",
    "sshd",
    "systemd-network",
    "systemd-resolve",
    "systemd-timesync",
    "systemd-journal",
    "_apt",
    "connect",
    "rstudio-connect",
    "nameserviced",
];

/// Why a username was refused. The `Display` text is what an administrator
/// reads in the log and what the caller gets back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NameError {
    Empty,
    TooLong { name: String, max: usize },
    BadCharacter { name: String, character: char },
    BadStart { name: String },
    Reserved { name: String },
    LocalAccount { name: String },
}

impl fmt::Display for NameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NameError::Empty => write!(f, "the username is empty"),
            NameError::TooLong { name, max } => write!(
                f,
                "username {name:?} is longer than {max} bytes; raise [Nameservice] MaxNameLength \
                 or use a shorter username attribute at the identity provider"
            ),
            NameError::BadCharacter { name, character } => write!(
                f,
                "username {name:?} contains {character:?}; Unix names may only use a-z, 0-9, '_', \
                 '.' and '-': use a username attribute with such names at the identity provider, \
                 or map this identity to an existing account with `nameservicectl map`"
            ),
            NameError::BadStart { name } => write!(
                f,
                "username {name:?} must start with a letter or '_' (all-numeric names would be \
                 taken for uids)"
            ),
            NameError::Reserved { name } => write!(
                f,
                "username {name:?} is reserved for the system and cannot be given to a federated \
                 identity; map the identity to an account with `nameservicectl map` if intended"
            ),
            NameError::LocalAccount { name } => write!(
                f,
                "username {name:?} belongs to a local account in /etc/passwd; a federated identity \
                 is never silently merged with a local account: map it explicitly with \
                 `nameservicectl map` if they are the same person"
            ),
        }
    }
}

impl std::error::Error for NameError {}

/// The administrator's choices that shape names.
#[derive(Debug, Clone)]
pub struct Policy {
    pub strip_domain: bool,
    pub max_len: usize,
    /// Built-in reserved names plus `[Nameservice] ReservedName` lines,
    /// the RunAs account and the shared group.
    pub reserved: HashSet<String>,
}

impl Policy {
    pub fn new(strip_domain: bool, max_len: usize, extra_reserved: &[String]) -> Self {
        let reserved = BUILTIN_RESERVED
            .iter()
            .map(|s| (*s).to_owned())
            .chain(extra_reserved.iter().map(|s| s.to_ascii_lowercase()))
            .collect();
        Self {
            strip_domain,
            max_len,
            reserved,
        }
    }

    pub fn is_reserved(&self, name: &str) -> bool {
        self.reserved.contains(name)
    }

    /// Normalises a username from an identity provider (rules in the module docs).
    pub fn username(&self, raw: &str) -> Result<String, NameError> {
        let trimmed = raw.trim();
        let base = match trimmed.find('@') {
            Some(at) if self.strip_domain => &trimmed[..at],
            _ => trimmed,
        };
        let name: String = base
            .chars()
            .map(|c| {
                if c == '@' {
                    '_'
                } else {
                    c.to_ascii_lowercase()
                }
            })
            .collect();
        if name.is_empty() {
            return Err(NameError::Empty);
        }
        if let Some(character) = name.chars().find(|c| !is_name_char(*c)) {
            return Err(NameError::BadCharacter {
                name: raw.to_owned(),
                character,
            });
        }
        if !name.starts_with(|c: char| c.is_ascii_lowercase() || c == '_') {
            return Err(NameError::BadStart { name });
        }
        if name.len() > self.max_len {
            return Err(NameError::TooLong {
                name,
                max: self.max_len,
            });
        }
        if self.is_reserved(&name) {
            return Err(NameError::Reserved { name });
        }
        Ok(name)
    }

    /// Normalises an identity provider's group name (rules in the module
    /// docs). `None` when nothing usable is left.
    pub fn group_name(&self, raw: &str) -> Option<String> {
        let mut name: String = raw
            .trim()
            .chars()
            .map(|c| {
                let c = c.to_ascii_lowercase();
                if is_name_char(c) {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        if name.is_empty() || name.chars().all(|c| c == '_') {
            return None;
        }
        if !name.starts_with(|c: char| c.is_ascii_lowercase() || c == '_') {
            name.insert(0, '_');
        }
        truncate_to(&mut name, self.max_len);
        Some(name)
    }
}

fn is_name_char(c: char) -> bool {
    // The same alphabet as connect_proto::is_plausible_name, checked per
    // character so errors can name the offending one.
    c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '.' | '-')
}

fn truncate_to(name: &mut String, max: usize) {
    // Names are ASCII by construction, so byte and char boundaries agree.
    if name.len() > max {
        name.truncate(max);
    }
}

/// The `n`th candidate for a name that is taken: `base` for 1, `base-2` for 2,
/// …, with `base` cut so the result stays within `max` bytes.
pub fn with_suffix(base: &str, n: u32, max: usize) -> String {
    if n <= 1 {
        return base.to_owned();
    }
    let suffix = format!("-{n}");
    let mut stem = base.to_owned();
    truncate_to(&mut stem, max.saturating_sub(suffix.len()));
    stem + &suffix
}

/// Strict check used on lookups: could the nameservice ever have given out
/// this name? Anything else is answered "not found" without a database read.
pub fn plausible_lookup_name(name: &str, max: usize) -> bool {
    connect_proto::is_plausible_name(name, max)
}

/// GECOS must not break the colon-separated passwd line or carry control
/// characters into terminals.
pub fn sanitise_gecos(raw: &str) -> String {
    raw.chars()
        .map(|c| if c == ':' || c.is_control() { ' ' } else { c })
        .take(256)
        .collect::<String>()
        .trim()
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        Policy::new(true, 32, &["svc-backup".to_owned()])
    }

    #[test]
    fn lowercases_and_strips_domain() {
        assert_eq!(policy().username("Alice@Corp.Example").unwrap(), "alice");
        assert_eq!(policy().username("  Bob.Smith ").unwrap(), "bob.smith");
    }

    #[test]
    fn keeps_domain_when_asked() {
        let p = Policy::new(false, 32, &[]);
        assert_eq!(
            p.username("alice@corp.example").unwrap(),
            "alice_corp.example"
        );
    }

    #[test]
    fn refuses_bad_usernames_with_the_rule_that_failed() {
        let p = policy();
        assert_eq!(p.username(""), Err(NameError::Empty));
        assert_eq!(p.username("@corp"), Err(NameError::Empty));
        assert!(matches!(p.username("0"), Err(NameError::BadStart { .. })));
        assert!(matches!(
            p.username("1234"),
            Err(NameError::BadStart { .. })
        ));
        assert!(matches!(p.username("-x"), Err(NameError::BadStart { .. })));
        assert!(matches!(
            p.username("../x"),
            Err(NameError::BadCharacter { character: '/', .. })
        ));
        assert!(matches!(p.username(".."), Err(NameError::BadStart { .. })));
        assert!(matches!(
            p.username("a\0b"),
            Err(NameError::BadCharacter {
                character: '\0',
                ..
            })
        ));
        assert!(matches!(
            p.username("josé"),
            Err(NameError::BadCharacter {
                character: 'é', ..
            })
        ));
        assert!(matches!(
            p.username("john smith"),
            Err(NameError::BadCharacter { character: ' ', .. })
        ));
        assert!(matches!(
            p.username(&"a".repeat(33)),
            Err(NameError::TooLong { max: 32, .. })
        ));
        assert!(p.username(&"a".repeat(32)).is_ok());
        assert!(matches!(
            p.username("Root"),
            Err(NameError::Reserved { .. })
        ));
        assert!(matches!(
            p.username("SVC-Backup"),
            Err(NameError::Reserved { .. })
        ));
    }

    #[test]
    fn error_texts_tell_the_admin_what_to_do() {
        let text = policy().username("john smith").unwrap_err().to_string();
        assert!(text.contains("nameservicectl map"), "{text}");
        let text = policy().username("root").unwrap_err().to_string();
        assert!(text.contains("reserved"), "{text}");
    }

    #[test]
    fn group_names_are_mapped_not_refused() {
        let p = policy();
        assert_eq!(
            p.group_name("Data-Science").as_deref(),
            Some("data-science")
        );
        assert_eq!(
            p.group_name("Data Science Leaders").as_deref(),
            Some("data_science_leaders")
        );
        assert_eq!(
            p.group_name("2024 Interns").as_deref(),
            Some("_2024_interns")
        );
        assert_eq!(p.group_name("Ventes Été").as_deref(), Some("ventes__t_"));
        assert_eq!(p.group_name("   "), None);
        assert_eq!(p.group_name("€€€"), None);
        assert_eq!(p.group_name(&"g".repeat(40)).map(|s| s.len()), Some(32));
    }

    #[test]
    fn suffixes_stay_within_the_length_limit() {
        assert_eq!(with_suffix("alice", 1, 32), "alice");
        assert_eq!(with_suffix("alice", 2, 32), "alice-2");
        let long = "a".repeat(32);
        let s = with_suffix(&long, 12, 32);
        assert_eq!(s.len(), 32);
        assert!(s.ends_with("-12"));
    }

    #[test]
    fn lookup_names_are_checked_strictly() {
        assert!(plausible_lookup_name("alice", 32));
        assert!(plausible_lookup_name("_svc.x-1", 32));
        assert!(!plausible_lookup_name("Alice", 32));
        assert!(!plausible_lookup_name("0", 32));
        assert!(!plausible_lookup_name("", 32));
        assert!(!plausible_lookup_name("a/b", 32));
        assert!(!plausible_lookup_name(&"a".repeat(33), 32));
    }

    #[test]
    fn gecos_cannot_break_the_passwd_line() {
        assert_eq!(sanitise_gecos("Alice: The\nGreat\0"), "Alice  The Great");
    }
}
