//! Settings read from gcfg text: Connect's defaults, and each refusal with
//! the line it names.

use super::*;

fn load(text: &str) -> Result<Settings, SettingsError> {
    let config = Config::parse(text, "connect.gcfg").map_err(SettingsError::from)?;
    Settings::from_config(&config)
}

fn refusal(text: &str) -> String {
    match load(text) {
        Ok(_) => panic!("accepted:\n{text}"),
        Err(e) => e.to_string(),
    }
}

const LDAP: &str = "[Authentication]\nProvider = ldap\n[LDAP \"corp\"]\n\
                    ServerAddress = 127.0.0.1:389\nUserSearchBaseDN = ou=people,dc=x\n";

#[test]
fn defaults_are_connects() {
    let s = load("").expect("empty file is fine");
    assert_eq!(s.provider, ProviderKind::Password);
    assert_eq!(s.default_role, Role::Viewer);
    assert_eq!(s.mapping, Mapping::Off);
    assert_eq!(s.listen, "0.0.0.0:3939".parse().expect("addr"));
    assert!(!s.run_as_current_user);
    assert!(!s.secure_cookies());
}

#[test]
fn both_mappings_are_refused_naming_the_line() {
    let e = refusal(&format!(
        "{LDAP}[Authorization]\nUserRoleGroupMapping = true\nUserRoleMapping = true\n"
    ));
    assert!(e.starts_with("connect.gcfg:8: "), "{e}");
    assert!(e.contains("both true"), "{e}");
}

#[test]
fn run_as_current_user_needs_accounts() {
    for provider in ["password", "proxy"] {
        let e = refusal(&format!(
            "[Authentication]\nProvider = {provider}\n[ProxyAuth]\nTrustedProxy = \
             127.0.0.1\n[Applications]\nRunAsCurrentUser = true\n"
        ));
        assert!(e.starts_with("connect.gcfg:6: "), "{e}");
        assert!(e.contains(&format!("Provider = {provider}")), "{e}");
    }
    let ok = load(&format!("{LDAP}[Applications]\nRunAsCurrentUser = true\n"));
    assert!(ok.is_ok());
}

#[test]
fn administrator_is_never_the_default() {
    let e = refusal("[Authorization]\nDefaultUserRole = administrator\n");
    assert!(e.starts_with("connect.gcfg:2: "), "{e}");
    assert!(e.contains("viewer or publisher"), "{e}");
    let e = refusal("[Authorization]\nDefaultUserRole = boss\n");
    assert!(e.contains("not a role"), "{e}");
    let s = load("[Authorization]\nDefaultUserRole = publisher\n").expect("publisher");
    assert_eq!(s.default_role, Role::Publisher);
}

#[test]
fn malformed_values_name_the_line() {
    let e = refusal("[Authorization]\n; comment\nUserRoleMapping = maybe\n");
    assert!(e.starts_with("connect.gcfg:3: "), "{e}");
    let e = refusal("[Authentication]\nProvider = kerberos\n");
    assert!(
        e.starts_with("connect.gcfg:2: ") && e.contains("unknown provider"),
        "{e}"
    );
    let e = refusal("[Server]\nAddress = \"https://x\n");
    assert!(e.starts_with("connect.gcfg:2"), "{e}");
}

#[test]
fn mapping_kinds_follow_the_keys() {
    let s = load(&format!(
        "{LDAP}UserAttributeRole = Department\n[Authorization]\nUserRoleMapping = true\n\
         PublisherRoleMapping = Engineering\nAdministratorRoleMapping = IT\n"
    ))
    .expect("attribute mapping");
    match s.mapping {
        Mapping::Attribute(t) => {
            assert_eq!(t.publisher, ["Engineering"]);
            assert_eq!(t.administrator, ["IT"]);
        }
        other => panic!("{other:?}"),
    }
    let direct = load(&format!("{LDAP}UserRoleAttribute = RSC-Role\n")).expect("direct");
    assert_eq!(direct.mapping, Mapping::Direct);
    let e = refusal(&format!("{LDAP}[Authorization]\nUserRoleMapping = true\n"));
    assert!(e.contains("UserRoleAttribute"), "{e}");
    let e =
        refusal("[Authentication]\nProvider = pam\n[Authorization]\nUserRoleGroupMapping = on\n");
    assert!(e.contains("not available"), "{e}");
}

#[test]
fn proxy_needs_trusted_peers() {
    let e = refusal("[Authentication]\nProvider = proxy\n");
    assert!(e.contains("TrustedProxy"), "{e}");
    let e = refusal("[Authentication]\nProvider = proxy\n[ProxyAuth]\nTrustedProxy = nowhere\n");
    assert!(e.starts_with("connect.gcfg:4: "), "{e}");
    let s = load(
        "[Authentication]\nProvider = proxy\n[ProxyAuth]\nTrustedProxy = 127.0.0.1, 10.0.0.0/8\n",
    )
    .expect("proxy");
    assert_eq!(s.proxy.trusted.len(), 2);
}

#[test]
fn unknown_keys_and_sections_are_listed() {
    let s = load(
        "[Authorization]\nDefaultUserRol = viewer\n[Nameservice]\nUidRange = 1-2\n[Bogus]\nX = 1\n",
    )
    .expect("warnings only");
    assert_eq!(
        s.unknown_keys,
        [
            "connect.gcfg:2: [Authorization] DefaultUserRol",
            "connect.gcfg:6: [Bogus] X (unknown section)",
        ]
    );
}

#[test]
fn ldap_sections_are_checked() {
    let e = refusal("[Authentication]\nProvider = ldap\n");
    assert!(e.contains("[LDAP \"name\"]"), "{e}");
    let e = refusal("[Authentication]\nProvider = ldap\n[LDAP \"a\"]\nServerAddress = x:389\n");
    assert!(e.contains("UserSearchBaseDN is missing"), "{e}");
    let e = refusal(&format!("{LDAP}BindDN = cn=reader\n"));
    assert!(e.contains("without BindPassword"), "{e}");
    let two = load(&format!(
        "{LDAP}[LDAP \"partners\"]\nServerAddress = 10.0.0.1:636\nTLS = true\n\
         UserSearchBaseDN = ou=p\n"
    ))
    .expect("two directories");
    assert_eq!(two.ldap.len(), 2);
    assert_eq!(two.ldap[1].name, "partners");
    assert!(two.ldap[1].tls);
}

#[test]
fn resource_limits_and_bundle_limits_default_and_refuse_the_unusable() {
    let s = load("").expect("defaults");
    assert_eq!(s.limits.memory_bytes, None);
    assert_eq!(s.limits.cpus, None);
    assert_eq!(s.limits.tasks, Some(DEFAULT_TASKS_MAX));
    assert_eq!(s.max_bundle_unpacked_size, 4 << 30);
    assert_eq!(s.max_bundle_file_size, 1 << 30);
    assert_eq!(s.bundle_retention_limit, 10);

    let s = load(
        "[Scheduler]\nMemoryLimit = 536870912\nCPULimit = 1.5\nTasksMax = 0\n\
         [Applications]\nMaxBundleSize = 1000\n",
    )
    .expect("limits");
    assert_eq!(s.limits.memory_bytes, Some(512 << 20));
    assert_eq!(s.limits.cpus, Some(1.5));
    assert_eq!(s.limits.tasks, None);
    assert_eq!(s.max_bundle_unpacked_size, 4000);
    assert_eq!(s.max_bundle_file_size, 1000);

    let e = refusal("[Scheduler]\nMemoryLimit = 1000\n");
    assert!(e.contains("connect.gcfg:2: [Scheduler] MemoryLimit"), "{e}");
    assert!(e.contains("at least 16777216"), "{e}");
    let e = refusal("[Scheduler]\nCPULimit = -1\n");
    assert!(e.contains("[Scheduler] CPULimit"), "{e}");
    let e = refusal("[Scheduler]\nTasksMax = 3\n");
    assert!(e.contains("at least 8"), "{e}");
    let e = refusal("[Scheduler]\nCgroupRoot = relative/dir\n");
    assert!(e.contains("not an absolute path"), "{e}");
}

const OIDC: &str = "[Server]\nAddress = https://connect.example.com\n\
                    [Authentication]\nProvider = oauth2\n[OAuth2]\n\
                    OpenIDConnectIssuer = https://idp.example.com\nClientId = connect\n";

#[test]
fn oauth2_is_read_with_connects_defaults() {
    let s = load(&format!(
        "{OIDC}ClientSecret = s3cret\nCustomScope = groups\nCustomScope = role offline_access\n"
    ))
    .expect("valid");
    assert_eq!(s.provider, ProviderKind::OAuth2);
    let o = s.oauth2.expect("[OAuth2]");
    assert_eq!(o.client_secret, "s3cret");
    assert_eq!(
        (o.username_claim.as_str(), o.unique_id_claim.as_str()),
        ("preferred_username", "sub")
    );
    assert_eq!(o.groups_claim, "groups");
    assert_eq!(o.custom_scopes, ["groups", "role", "offline_access"]);
    assert!(!o.require_username_claim && !o.allow_loopback_http);
    assert!(o.groups_auto_provision, "groups from the claim are created");
    assert!(
        !format!("{o:?}").contains("s3cret"),
        "Debug hides the secret"
    );
}

#[test]
fn oauth2_refusals_name_the_key_and_the_fix() {
    let without = |key: &str| {
        OIDC.lines()
            .filter(|l| !l.starts_with(key))
            .map(|l| format!("{l}\n"))
            .collect::<String>()
            + "ClientSecret = s\n"
    };
    let e = refusal(&without("OpenIDConnectIssuer"));
    assert!(e.contains("needs [OAuth2] OpenIDConnectIssuer"), "{e}");
    let e = refusal(&without("ClientId"));
    assert!(e.contains("ClientId is missing"), "{e}");
    let e = refusal(&without("Address"));
    assert!(
        e.contains("needs [Server] Address") && e.contains("/__login__/callback"),
        "{e}"
    );
    let e = refusal(OIDC);
    assert!(e.contains("needs ClientSecret or ClientSecretFile"), "{e}");
    let e = refusal(&format!(
        "{OIDC}ClientSecret = a\nClientSecretFile = /etc/secret\n"
    ));
    assert!(e.contains("both set"), "{e}");
    let e = refusal(&format!("{OIDC}ClientSecretFile = /nonexistent/secret\n"));
    assert!(e.contains("cannot be read"), "{e}");
    let http = OIDC.replace("https://idp.example.com", "http://idp.example.com");
    let e = refusal(&format!("{http}ClientSecret = s\n"));
    assert!(
        e.contains("must be an https URL") && e.contains("AllowInsecureLoopbackIssuer"),
        "{e}"
    );
    let e = refusal(&format!(
        "{http}ClientSecret = s\nAllowInsecureLoopbackIssuer = true\n"
    ));
    assert!(e.contains("only to 127.0.0.1"), "{e}");
    let loopback = OIDC.replace("https://idp.example.com", "http://127.0.0.1:9999");
    let s = load(&format!(
        "{loopback}ClientSecret = s\nAllowInsecureLoopbackIssuer = true\n"
    ));
    assert!(s.is_ok(), "loopback http behind the key is allowed");
    let e = refusal(&format!(
        "{OIDC}ClientSecret = s\nTLSCACertificate = /etc/hostname\n"
    ));
    assert!(
        e.contains("holds no certificate") || e.contains("cannot be read"),
        "{e}"
    );
}

#[test]
fn a_changeable_identity_claim_is_refused_for_current_user_content() {
    let text = format!(
        "{OIDC}ClientSecret = s\nUniqueIdClaim = preferred_username\n\
         [Applications]\nRunAsCurrentUser = true\n"
    );
    let e = refusal(&text);
    assert!(
        e.contains("UniqueIdClaim = preferred_username") && e.contains("sub"),
        "{e}"
    );
    let email = text.replace(
        "UniqueIdClaim = preferred_username",
        "UniqueIdClaim = email",
    );
    assert!(refusal(&email).contains("can change"));
    let ok = text.replace("UniqueIdClaim = preferred_username", "UniqueIdClaim = oid");
    assert!(load(&ok).is_ok(), "a stable claim is fine");
    let no_run_as = format!("{OIDC}ClientSecret = s\nUniqueIdClaim = email\n");
    assert!(
        load(&no_run_as).is_ok(),
        "without current-user content no account depends on it"
    );
}

#[test]
fn role_claim_feeds_role_mapping() {
    let s = load(&format!(
        "{OIDC}ClientSecret = s\nRoleClaim = roles\n[Authorization]\nUserRoleMapping = true\n"
    ))
    .expect("valid");
    assert!(matches!(s.mapping, Mapping::Attribute(_)));
    let e = refusal(&format!(
        "{OIDC}ClientSecret = s\n[Authorization]\nUserRoleMapping = true\n"
    ));
    assert!(e.contains("[OAuth2] RoleClaim"), "{e}");
}

const SAML: &str = "[Server]\nAddress = https://connect.example.com\n\
                    [Authentication]\nProvider = saml\n[SAML]\n\
                    IdPMetaDataURL = https://idp.example.com/metadata\n";

#[test]
fn saml_is_read_with_connects_defaults_and_profiles() {
    let s = load(SAML).expect("valid");
    assert_eq!(s.provider, ProviderKind::Saml);
    let saml = s.saml.expect("[SAML]");
    assert_eq!(
        saml.metadata,
        MetadataSource::Url("https://idp.example.com/metadata".parse().expect("url"))
    );
    assert_eq!(saml.attributes.unique_id, None, "the NameID by default");
    assert_eq!(saml.attributes.username, "Username");
    assert_eq!(saml.sso_initiated, SsoInitiated::Sp);
    assert_eq!(saml.metadata_refresh, std::time::Duration::from_secs(3600));

    let azure = load(&format!(
        "{SAML}IdPAttributeProfile = azure\nEmailAttribute = mail\nSSOInitiated = IdPAndSP\n\
         UniqueIdAttribute = NameID\n"
    ))
    .expect("valid")
    .saml
    .expect("[SAML]");
    assert!(azure.attributes.username.ends_with("/claims/name"));
    assert_eq!(
        azure.attributes.email, "mail",
        "a key overrides the profile"
    );
    assert_eq!(azure.attributes.unique_id, None, "NameID spelled out");
    assert_eq!(azure.sso_initiated, SsoInitiated::Both);
    let file = load(&SAML.replace(
        "https://idp.example.com/metadata",
        "/etc/rstudio-connect/idp.xml",
    ))
    .expect("a file")
    .saml
    .expect("[SAML]");
    assert_eq!(
        file.metadata,
        MetadataSource::File("/etc/rstudio-connect/idp.xml".into())
    );
    let s = load(&format!(
        "{SAML}RoleAttribute = role\n[Authorization]\nUserRoleMapping = true\n"
    ))
    .expect("valid");
    assert!(matches!(s.mapping, Mapping::Attribute(_)));
    assert!(
        refusal(&format!("{SAML}[Authorization]\nUserRoleMapping = true\n"))
            .contains("[SAML] RoleAttribute")
    );
}

#[test]
fn saml_refusals_name_the_key_and_the_fix() {
    let e = refusal(&SAML.replace("IdPMetaDataURL = https://idp.example.com/metadata\n", ""));
    assert!(e.contains("needs [SAML] IdPMetaDataURL"), "{e}");
    let e = refusal(&SAML.replace("Address = https://connect.example.com\n", ""));
    assert!(
        e.contains("needs [Server] Address") && e.contains("/__login__"),
        "{e}"
    );
    let e = refusal(&SAML.replace("https://connect.example.com", "http://connect.example.com"));
    assert!(e.contains("needs an https address"), "{e}");
    let loopback = SAML.replace("https://connect.example.com", "http://127.0.0.1:3939");
    assert!(load(&loopback).is_ok(), "plain http on loopback (tests)");
    let http_idp = SAML.replace("https://idp.example.com", "http://idp.example.com");
    let e = refusal(&http_idp);
    assert!(
        e.contains("must be https") && e.contains("AllowInsecureLoopbackMetadata"),
        "{e}"
    );
    let e = refusal(&format!("{http_idp}AllowInsecureLoopbackMetadata = true\n"));
    assert!(e.contains("only to 127.0.0.1"), "{e}");
    let e = refusal(&format!("{SAML}IdPAttributeProfile = keycloak\n"));
    assert!(e.contains("unknown; use default, azure"), "{e}");
    let e = refusal(&format!("{SAML}SSOInitiated = both\n"));
    assert!(e.contains("use SP, IdP or IdPAndSP"), "{e}");
    let e = refusal(&format!("{SAML}SPCertificateFile = /etc/sp.pem\n"));
    assert!(e.contains("go together"), "{e}");
    let e = refusal(&SAML.replace("https://idp.example.com/metadata", "idp.xml"));
    assert!(e.contains("neither an absolute file path nor a URL"), "{e}");
    let e = refusal(&format!(
        "{SAML}UniqueIdAttribute = Email\n[Applications]\nRunAsCurrentUser = true\n"
    ));
    assert!(
        e.contains("UniqueIdAttribute = Email") && e.contains("can change"),
        "{e}"
    );
    assert!(load(&format!(
        "{SAML}UniqueIdAttribute = ObjectId\n[Applications]\nRunAsCurrentUser = true\n"
    ))
    .is_ok());
}
