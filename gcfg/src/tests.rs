//! Tests of parsing and lookups through the public API.

use super::*;

const ORIGIN: &str = "/etc/connect/connect.gcfg";

fn parse(text: &str) -> Config {
    match Config::parse(text, ORIGIN) {
        Ok(cfg) => cfg,
        Err(err) => panic!("unexpected error: {err}"),
    }
}

fn syntax_error(text: &str) -> String {
    match Config::parse(text, ORIGIN) {
        Ok(_) => panic!("expected a syntax error for {text:?}"),
        Err(err @ ConfigError::Syntax { .. }) => err.to_string(),
        Err(other) => panic!("expected a syntax error, got {other:?}"),
    }
}

#[test]
fn section_and_key_names_are_case_insensitive() {
    let cfg = parse("[sErVeR]\nADDRESS = :3939\n");
    assert_eq!(
        cfg.string(Key::new("Server", "Address")).as_deref(),
        Some(":3939")
    );
    assert_eq!(
        cfg.string(Key::new("server", "address")).as_deref(),
        Some(":3939")
    );
    assert_eq!(
        cfg.string(Key::new("SERVER", "aDdReSs")).as_deref(),
        Some(":3939")
    );
    assert!(cfg.has_section("server"));
    assert!(!cfg.has_section("Database"));
}

#[test]
fn subsection_names_are_case_sensitive() {
    let cfg = parse(
        "[LDAP \"Corp\"]\nServerAddress = ldap.corp\n[ldap \"corp\"]\nServerAddress = other\n",
    );
    assert_eq!(
        cfg.string(Key::sub("LDAP", "Corp", "ServerAddress"))
            .as_deref(),
        Some("ldap.corp")
    );
    assert_eq!(
        cfg.string(Key::sub("ldap", "corp", "serveraddress"))
            .as_deref(),
        Some("other")
    );
    assert_eq!(cfg.string(Key::sub("LDAP", "CORP", "ServerAddress")), None);
    // A subsection key is not visible through the plain section.
    assert_eq!(cfg.string(Key::new("LDAP", "ServerAddress")), None);
    assert_eq!(cfg.subsections("ldap"), vec!["Corp", "corp"]);
}

#[test]
fn deprecated_dot_subsection_is_lowercased_like_git() {
    let cfg = parse("[LDAP.Corp]\nHost = a\n");
    assert_eq!(
        cfg.string(Key::sub("LDAP", "corp", "Host")).as_deref(),
        Some("a")
    );
    assert_eq!(cfg.string(Key::sub("LDAP", "Corp", "Host")), None);
}

#[test]
fn repeated_sections_add_up_and_last_value_wins() {
    let cfg = parse(
        "[Server]\nAddress = :1\n[Database]\nProvider = sqlite\n\
         [Server]\nDataDir = /var/lib\nAddress = :2\n[server]\naddress = :3\n",
    );
    assert_eq!(
        cfg.string(Key::new("Server", "Address")).as_deref(),
        Some(":3")
    );
    assert_eq!(cfg.line_of(Key::new("Server", "Address")), Some(9));
    assert_eq!(
        cfg.string(Key::new("Server", "DataDir")).as_deref(),
        Some("/var/lib")
    );
    assert_eq!(
        cfg.string(Key::new("Database", "Provider")).as_deref(),
        Some("sqlite")
    );
    assert_eq!(cfg.string(Key::new("Server", "Missing")), None);
    assert_eq!(cfg.line_of(Key::new("Server", "Missing")), None);
}

#[test]
fn multi_valued_keys_collect_in_file_order_across_sections() {
    let cfg = parse(
        "[Authorization]\nAdministratorRoleMapping = admins\n\
         AdministratorRoleMapping = \"ops team\"\n\
         [Server]\nAddress = :1\n\
         [authorization]\nadministratorrolemapping = root ; last\n",
    );
    assert_eq!(
        cfg.strings(Key::new("Authorization", "AdministratorRoleMapping")),
        vec!["admins", "ops team", "root"]
    );
    assert!(cfg.strings(Key::new("Authorization", "Other")).is_empty());
    assert_eq!(
        cfg.string(Key::new("Authorization", "AdministratorRoleMapping"))
            .as_deref(),
        Some("root")
    );
}

#[test]
fn trailing_comments_are_dropped_but_kept_inside_quotes() {
    let cfg = parse(
        "# leading comment\n; another\n[Server] ; header comment\n\
         A = one ; semicolon comment\n\
         B = two # hash comment\n\
         C = \"three # not a comment\" # comment\n\
         D = \"four ; not either\"\n\
         E = five six   \n",
    );
    let get = |k| cfg.string(Key::new("Server", k));
    assert_eq!(get("A").as_deref(), Some("one"));
    assert_eq!(get("B").as_deref(), Some("two"));
    assert_eq!(get("C").as_deref(), Some("three # not a comment"));
    assert_eq!(get("D").as_deref(), Some("four ; not either"));
    // Unquoted inner whitespace is kept, trailing whitespace is not.
    assert_eq!(get("E").as_deref(), Some("five six"));
}

#[test]
fn quoted_string_escapes() {
    let cfg = parse(
        "[S]\nq = \"say \\\"hi\\\"\"\nb = \"C:\\\\dir\"\nn = \"a\\nb\"\nt = \"a\\tb\"\n\
         sp = \"  padded  \"\nmix = pre\" quoted \"post\n",
    );
    let get = |k| cfg.string(Key::new("S", k));
    assert_eq!(get("q").as_deref(), Some("say \"hi\""));
    assert_eq!(get("b").as_deref(), Some("C:\\dir"));
    assert_eq!(get("n").as_deref(), Some("a\nb"));
    assert_eq!(get("t").as_deref(), Some("a\tb"));
    assert_eq!(get("sp").as_deref(), Some("  padded  "));
    assert_eq!(get("mix").as_deref(), Some("pre quoted post"));
}

#[test]
fn continued_values_join_and_keep_line_counting_right() {
    let cfg = parse("[S]\nlong = one \\\n  two\nnext = 3\n");
    assert_eq!(
        cfg.string(Key::new("S", "long")).as_deref(),
        Some("one   two")
    );
    assert_eq!(cfg.line_of(Key::new("S", "long")), Some(2));
    assert_eq!(cfg.line_of(Key::new("S", "next")), Some(4));
}

#[test]
fn key_without_value_is_true_and_empty_string() {
    let cfg = parse("[Authorization]\n  UserRoleMapping\nEmpty =\n");
    let flag = Key::new("Authorization", "UserRoleMapping");
    assert_eq!(cfg.bool(flag).ok(), Some(Some(true)));
    assert_eq!(cfg.string(flag).as_deref(), Some(""));
    assert_eq!(cfg.strings(flag), vec![""]);
    // `Key =` is an explicit empty value: empty string, but not a boolean.
    let empty = Key::new("Authorization", "Empty");
    assert_eq!(cfg.string(empty).as_deref(), Some(""));
    let err = cfg.bool(empty).unwrap_err().to_string();
    assert_eq!(
        err,
        format!("{ORIGIN}:3: [Authorization] Empty = \"\": not a boolean; use true or false")
    );
    // Other types need a value too.
    assert!(cfg.u32(flag).is_err());
    assert!(cfg.duration(flag).is_err());
}

#[test]
fn every_boolean_spelling_through_config() {
    let spellings = [
        ("true", true),
        ("True", true),
        ("YES", true),
        ("on", true),
        ("1", true),
        ("false", false),
        ("FALSE", false),
        ("no", false),
        ("Off", false),
        ("0", false),
    ];
    for (text, want) in spellings {
        let cfg = parse(&format!("[A]\nFlag = {text}\n"));
        assert_eq!(
            cfg.bool(Key::new("A", "Flag")).ok(),
            Some(Some(want)),
            "{text}"
        );
    }
    assert_eq!(parse("[A]\n").bool(Key::new("A", "Flag")).ok(), Some(None));
}

#[test]
fn bad_boolean_error_names_file_line_key_value_and_fix() {
    let cfg = parse(
        "[Server]\nAddress = :3939\n\n; comment\n[Authorization]\nUserRoleMapping = true\n\
         UserRoleMapping = maybe\n",
    );
    let err = cfg
        .bool(Key::new("Authorization", "UserRoleMapping"))
        .unwrap_err();
    match &err {
        ConfigError::Value {
            path,
            line,
            key,
            value,
            ..
        } => {
            assert_eq!(path, ORIGIN);
            assert_eq!(*line, Some(7));
            assert_eq!(key, "[Authorization] UserRoleMapping");
            assert_eq!(value, "maybe");
        }
        other => panic!("expected a value error, got {other:?}"),
    }
    assert_eq!(
        err.to_string(),
        "/etc/connect/connect.gcfg:7: [Authorization] UserRoleMapping = \"maybe\": \
         not a boolean; use true or false"
    );
}

#[test]
fn value_error_in_subsection_names_the_subsection() {
    let cfg = parse("[LDAP \"corp\"]\nTimeout = soon\n");
    let err = cfg
        .duration(Key::sub("LDAP", "corp", "Timeout"))
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "{ORIGIN}:2: [LDAP \"corp\"] Timeout = \"soon\": \
             not a duration; use e.g. 500ms, 30s, 3m or 1h"
        )
    );
}

#[test]
fn durations_through_config() {
    let cfg = parse(
        "[T]\na = 500ms\nb = 30s\nc = 3m\nd = 1h\ne = 1h30m\nf = 90\n\
         g = 3 parsecs\nh = -1s\ni = \"45s\"\n",
    );
    let get = |k| cfg.duration(Key::new("T", k));
    assert_eq!(get("a").ok(), Some(Some(Duration::from_millis(500))));
    assert_eq!(get("b").ok(), Some(Some(Duration::from_secs(30))));
    assert_eq!(get("c").ok(), Some(Some(Duration::from_secs(180))));
    assert_eq!(get("d").ok(), Some(Some(Duration::from_secs(3600))));
    assert_eq!(get("e").ok(), Some(Some(Duration::from_secs(5400))));
    assert_eq!(get("f").ok(), Some(Some(Duration::from_secs(90))));
    assert_eq!(get("i").ok(), Some(Some(Duration::from_secs(45))));
    assert_eq!(get("missing").ok(), Some(None));
    assert_eq!(
        get("g").unwrap_err().to_string(),
        format!("{ORIGIN}:8: [T] g = \"3 parsecs\": not a duration; use e.g. 500ms, 30s, 3m or 1h")
    );
    assert_eq!(
        get("h").unwrap_err().to_string(),
        format!("{ORIGIN}:9: [T] h = \"-1s\": not a duration; use e.g. 500ms, 30s, 3m or 1h")
    );
}

#[test]
fn numbers_through_config() {
    let cfg = parse(
        "[N]\nsmall = 42\nbig = 5000000000\nneg = -3\nfrac = 0.75\nword = lots\nmax = 4294967295\n",
    );
    let k = |name| Key::new("N", name);
    assert_eq!(cfg.u32(k("small")).ok(), Some(Some(42)));
    assert_eq!(cfg.u32(k("max")).ok(), Some(Some(u32::MAX)));
    assert_eq!(cfg.u64(k("big")).ok(), Some(Some(5_000_000_000)));
    assert_eq!(cfg.f64(k("frac")).ok(), Some(Some(0.75)));
    assert_eq!(cfg.f64(k("small")).ok(), Some(Some(42.0)));
    assert_eq!(cfg.f64(k("neg")).ok(), Some(Some(-3.0)));
    assert_eq!(cfg.u32(k("missing")).ok(), Some(None));

    assert_eq!(
        cfg.u32(k("big")).unwrap_err().to_string(),
        format!("{ORIGIN}:3: [N] big = \"5000000000\": not a number between 0 and 4294967295")
    );
    let neg = cfg.u64(k("neg")).unwrap_err().to_string();
    assert!(
        neg.starts_with(&format!(
            "{ORIGIN}:4: [N] neg = \"-3\": not a number between 0 and"
        )),
        "{neg}"
    );
    let frac = cfg.u32(k("frac")).unwrap_err().to_string();
    assert!(frac.starts_with(&format!("{ORIGIN}:5: ")), "{frac}");
    let word = cfg.f64(k("word")).unwrap_err().to_string();
    assert_eq!(
        word,
        format!(
            "{ORIGIN}:6: [N] word = \"lots\": not a number; use a decimal number such as 0.5 or 10"
        )
    );
}

#[test]
fn ranges_through_config() {
    let cfg = parse(
        "[Launcher]\nUidRange = 1000000000-1099999999\nReversed = 20-10\nNoDash = 1000\n\
         Overflow = 1-4294967296\n",
    );
    let k = |name| Key::new("Launcher", name);
    assert_eq!(
        cfg.u32_range(k("UidRange")).ok(),
        Some(Some(1_000_000_000..=1_099_999_999))
    );
    assert_eq!(cfg.u32_range(k("Missing")).ok(), Some(None));

    let reversed = cfg.u32_range(k("Reversed")).unwrap_err().to_string();
    assert!(
        reversed.starts_with(&format!(
            "{ORIGIN}:3: [Launcher] Reversed = \"20-10\": the range is reversed"
        )),
        "{reversed}"
    );
    assert_eq!(
        cfg.u32_range(k("NoDash")).unwrap_err().to_string(),
        format!("{ORIGIN}:4: [Launcher] NoDash = \"1000\": not a range; use LOW-HIGH, e.g. 1000000000-1099999999")
    );
    let overflow = cfg.u32_range(k("Overflow")).unwrap_err().to_string();
    assert!(overflow.starts_with(&format!("{ORIGIN}:5: ")), "{overflow}");
    assert!(overflow.contains("between 0 and 4294967295"), "{overflow}");
}

#[test]
fn subsections_in_file_order_deduplicated() {
    let cfg = parse(
        "[LDAP \"corp\"]\nHost = a\n[Server]\n[LDAP \"partners\"]\nHost = b\n\
         [ldap \"corp\"]\nPort = 389\n[LDAP]\nGlobal = 1\n[Empty \"x\"]\n",
    );
    assert_eq!(cfg.subsections("LDAP"), vec!["corp", "partners"]);
    assert_eq!(cfg.subsections("Server"), Vec::<String>::new());
    assert_eq!(cfg.subsections("Empty"), vec!["x"]);
    assert!(cfg.has_section("empty"));
    assert!(cfg.has_section("server"));
    assert!(!cfg.has_section("corp"));
    assert_eq!(cfg.string(Key::new("LDAP", "Global")).as_deref(), Some("1"));
    assert_eq!(
        cfg.u32(Key::sub("LDAP", "corp", "Port")).ok(),
        Some(Some(389))
    );
}

#[test]
fn entries_list_every_key_with_its_line() {
    let cfg = parse(
        "; header comment\n\n[Server]\nAddress = :3939 # port\n\n[LDAP \"corp\"]\n  Flag\n\
         Host = \"ldap.example\"\n[server]\nAddress = :4000\n",
    );
    let entry = |section: &str, sub: Option<&str>, name: &str, line, value: &str| Entry {
        section: section.into(),
        subsection: sub.map(Into::into),
        name: name.into(),
        line,
        value: value.into(),
    };
    assert_eq!(
        cfg.entries(),
        vec![
            entry("Server", None, "Address", 4, ":3939"),
            entry("LDAP", Some("corp"), "Flag", 7, ""),
            entry("LDAP", Some("corp"), "Host", 8, "ldap.example"),
            entry("server", None, "Address", 10, ":4000"),
        ]
    );
    assert_eq!(cfg.line_of(Key::new("Server", "Address")), Some(10));
    assert_eq!(cfg.line_of(Key::sub("LDAP", "corp", "host")), Some(8));
}

#[test]
fn crlf_line_endings_count_lines() {
    let cfg = parse("[A]\r\n\r\nk = 1\r\nj = \"x\"\r\n");
    assert_eq!(cfg.line_of(Key::new("A", "k")), Some(3));
    assert_eq!(cfg.line_of(Key::new("A", "j")), Some(4));
    assert_eq!(cfg.string(Key::new("A", "j")).as_deref(), Some("x"));
}

#[test]
fn empty_config_returns_nothing() {
    let cfg = Config::empty();
    let k = Key::new("Server", "Address");
    assert_eq!(cfg.string(k), None);
    assert!(cfg.strings(k).is_empty());
    assert_eq!(cfg.bool(k).ok(), Some(None));
    assert_eq!(cfg.duration(k).ok(), Some(None));
    assert_eq!(cfg.u32(k).ok(), Some(None));
    assert_eq!(cfg.u64(k).ok(), Some(None));
    assert_eq!(cfg.f64(k).ok(), Some(None));
    assert_eq!(cfg.u32_range(k).ok(), Some(None));
    assert!(cfg.subsections("LDAP").is_empty());
    assert!(!cfg.has_section("Server"));
    assert!(cfg.entries().is_empty());
    assert_eq!(cfg.line_of(k), None);
    assert!(parse("").entries().is_empty());
    assert!(parse("# only a comment\n").entries().is_empty());
}

#[test]
fn key_display() {
    assert_eq!(Key::new("Server", "Address").to_string(), "Server.Address");
    assert_eq!(
        Key::sub("LDAP", "corp", "Host").to_string(),
        "LDAP \"corp\".Host"
    );
}

#[test]
fn syntax_error_unterminated_quote_names_line() {
    let err =
        syntax_error("[Server]\nAddress = :3939\n\n# note\nDataDir = \"/var/lib\nOther = 1\n");
    assert!(
        err.starts_with(&format!("{ORIGIN}:5: unterminated quoted string")),
        "{err}"
    );
}

#[test]
fn syntax_error_bad_section_header_names_line() {
    let err = syntax_error("[Server]\nAddress = :3939\n\n[Applications\nRunAs = rstudio-connect\n");
    assert!(
        err.starts_with(&format!(
            "{ORIGIN}:4: malformed section header `[Applications`"
        )),
        "{err}"
    );
    let err = syntax_error("[Two Words]\n");
    assert!(
        err.starts_with(&format!("{ORIGIN}:1: malformed section header")),
        "{err}"
    );
}

#[test]
fn syntax_error_other_problems_name_line() {
    let err = syntax_error("[A]\nk = \"a\\qb\"\n");
    assert!(
        err.starts_with(&format!("{ORIGIN}:2: unknown escape sequence")),
        "{err}"
    );
    let err = syntax_error("[A]\nok = 1\nBad_Key = 1\n");
    assert!(
        err.starts_with(&format!("{ORIGIN}:3: cannot parse `Bad_Key = 1`")),
        "{err}"
    );
    let err = syntax_error("[A]\n= 1\n");
    assert!(
        err.starts_with(&format!("{ORIGIN}:2: missing key name")),
        "{err}"
    );
}

#[test]
fn key_before_any_section_is_a_syntax_error() {
    let err = syntax_error("# comment\n\nAddress = :3939\n[Server]\n");
    assert!(
        err.starts_with(&format!("{ORIGIN}:3: key `Address` is outside any section")),
        "{err}"
    );
}

#[test]
fn load_reads_a_file_and_uses_its_path_in_messages() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("connect.gcfg");
    std::fs::write(&path, "[Authorization]\nUserRoleMapping = maybe\n").unwrap();
    let cfg = Config::load(&path).unwrap();
    assert_eq!(cfg.origin(), path.display().to_string());
    let err = cfg
        .bool(Key::new("Authorization", "UserRoleMapping"))
        .unwrap_err()
        .to_string();
    assert!(err.starts_with(&format!("{}:2: ", path.display())), "{err}");
}

#[test]
fn load_syntax_error_names_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("connect.gcfg");
    std::fs::write(&path, "[Server]\n[Applications\n").unwrap();
    let err = Config::load(&path).unwrap_err().to_string();
    assert!(err.starts_with(&format!("{}:2: ", path.display())), "{err}");
}

#[test]
fn load_rejects_invalid_utf8_with_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("connect.gcfg");
    std::fs::write(&path, b"[Server]\nAddress = \xff\n").unwrap();
    let err = Config::load(&path).unwrap_err().to_string();
    assert_eq!(
        err,
        format!("{}:2: the file is not valid UTF-8", path.display())
    );
}

#[test]
fn load_missing_file_is_io_error_naming_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("does-not-exist.gcfg");
    let err = Config::load(&path).unwrap_err();
    match &err {
        ConfigError::Io { path: p, source } => {
            assert_eq!(p, &path.display().to_string());
            assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
        }
        other => panic!("expected an Io error, got {other:?}"),
    }
    assert!(err.to_string().contains("does-not-exist.gcfg"), "{err}");
}

#[test]
fn line_counting_matches_the_source_for_a_realistic_file() {
    let text = "\
; Connect configuration
[Server]
Address = :3939   ; default port
DataDir = /var/lib/rstudio-connect

[Authorization]
UserRoleMapping = true
AdministratorRoleMapping = admins
  AdministratorRoleMapping = \"ops # team\"

# LDAP servers
[LDAP \"corp\"]
ServerAddress = ldap.corp:389
Timeout = 1h30m

[Launcher]
UidRange = 1000000000-1099999999
";
    let cfg = parse(text);
    // Every entry's line must hold that key in the source text.
    for entry in cfg.entries() {
        let line = text.lines().nth(entry.line - 1).unwrap();
        assert!(
            line.trim_start().starts_with(&entry.name),
            "entry {entry:?} not on line {line:?}"
        );
    }
    assert_eq!(cfg.entries().len(), 8);
    assert_eq!(
        cfg.duration(Key::sub("LDAP", "corp", "Timeout")).ok(),
        Some(Some(Duration::from_secs(5400)))
    );
}
