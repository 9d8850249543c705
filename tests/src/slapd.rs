//! A real OpenLDAP `slapd` for end-to-end tests, started by the test itself.
//!
//! Everything lives in one temporary directory: an old-style `slapd.conf`
//! (`slapd -f`, no cn=config), an mdb database, a throwaway CA and server
//! certificate made with the `openssl` CLI, and slapd's log. slapd listens on
//! loopback only, on ports picked at start, both `ldap://` (StartTLS
//! available) and `ldaps://`. It runs in the foreground as a child of the
//! test and dies with it, so the host is never changed and nothing is left
//! behind but, at worst, the temporary directory of a test that was killed.
//!
//! The directory (suffix `dc=example,dc=org`):
//! - `cn=admin,dc=example,dc=org`: the rootdn, used by the mutators;
//! - `cn=reader,dc=example,dc=org`: a read-only service account;
//! - `ou=people` (users: inetOrgPerson + connectTestPerson) and `ou=groups`
//!   (groupOfNames).
//!
//! Access: the reader and the admin read everything; anyone may *authenticate*
//! against a `userPassword` (a simple bind); a bound user may read its own
//! entry (not its password); anonymous can do nothing else. The root DSE and
//! the subschema entry stay readable by all, as on any real server: client
//! libraries read them to discover controls and extensions, and they hold no
//! directory data.
//!
//! The custom schema is `tests/fixtures/ldap/connect-test.schema`: the
//! multi-valued attributes `Department` and `RSC-Role` on the auxiliary class
//! `connectTestPerson`.
//!
//! Needs `slapd`, `ldap-utils` and `openssl` (scripts/deps.sh installs them).
//! Does not need root.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

const BASE_DN: &str = "dc=example,dc=org";
const ADMIN_DN: &str = "cn=admin,dc=example,dc=org";
const ADMIN_PASSWORD: &str = "admin-secret";
const READER_DN: &str = "cn=reader,dc=example,dc=org";
const READER_PASSWORD: &str = "reader-secret";
const PEOPLE_DN: &str = "ou=people,dc=example,dc=org";
const GROUPS_DN: &str = "ou=groups,dc=example,dc=org";

/// How long `start` waits for slapd to answer before giving up.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// How long `stop` waits after SIGTERM before SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);
/// Start attempts with fresh ports: another process may take a port between
/// the moment we find it free and the moment slapd binds it.
const PORT_ATTEMPTS: usize = 5;
/// ldapmodify's exit status is the LDAP result code.
const LDAP_NO_SUCH_ATTRIBUTE: i32 = 16;
const LDAP_OBJECT_CLASS_VIOLATION: i32 = 65;

/// A running (or stopped) test directory server. See the module docs.
///
/// slapd is started with `PR_SET_PDEATHSIG = SIGKILL`, which fires when the
/// *thread* that spawned it ends: create a `Slapd` in the test's own thread
/// (not in a shared static initialised by whichever test comes first), or it
/// will be killed when that thread finishes.
pub struct Slapd {
    /// Removed on drop, after the child is killed (fields drop after `Drop::drop`).
    dir: tempfile::TempDir,
    child: Option<Child>,
    port: u16,
    ldaps_port: u16,
    log: PathBuf,
}

/// Why one start attempt failed in a way worth retrying.
enum StartFailure {
    PortInUse,
}

impl Slapd {
    /// Creates the directory and its TLS material, loads the base entries with
    /// `slapadd`, starts slapd on two free loopback ports and returns once it
    /// answers a bind. Panics (with slapd's log) if it does not within 20 s.
    pub fn start() -> Slapd {
        let dir = tempfile::Builder::new()
            .prefix("connect-slapd-")
            .tempdir()
            .expect("create a temporary directory for slapd");
        let root = dir.path().to_path_buf();
        fs::create_dir(root.join("db")).expect("create db directory");
        make_tls(&root);
        fs::write(root.join("slapd.conf"), slapd_conf(&root)).expect("write slapd.conf");
        fs::write(root.join("base.ldif"), base_ldif()).expect("write base.ldif");
        // slapadd before start: no ACLs or network involved, and entryUUID,
        // timestamps and the like are generated just as for an online add.
        let out = Command::new(sbin("slapadd"))
            .current_dir(&root)
            .arg("-q")
            .arg("-f")
            .arg(root.join("slapd.conf"))
            .arg("-l")
            .arg(root.join("base.ldif"))
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run slapadd (run scripts/deps.sh): {e}"));
        assert!(
            out.status.success(),
            "slapadd failed: {}\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let mut slapd = Slapd {
            log: root.join("slapd.log"),
            dir,
            child: None,
            port: 0,
            ldaps_port: 0,
        };
        for attempt in 1..=PORT_ATTEMPTS {
            let (port, ldaps_port) = free_ports();
            slapd.port = port;
            slapd.ldaps_port = ldaps_port;
            match slapd.launch() {
                Ok(()) => return slapd,
                Err(StartFailure::PortInUse) if attempt < PORT_ATTEMPTS => continue,
                Err(StartFailure::PortInUse) => panic!(
                    "slapd found its ports taken {PORT_ATTEMPTS} times; log:\n{}",
                    slapd.log_text()
                ),
            }
        }
        unreachable!("the last attempt returns or panics")
    }

    /// Starts slapd again on the same ports and database after `stop` or
    /// `kill` (the directory "comes back"). Panics if a port was taken
    /// meanwhile or slapd does not answer.
    pub fn restart(&mut self) {
        self.stop();
        // slapd sets SO_REUSEADDR, so our own TIME_WAIT sockets do not count;
        // a few tries cover a client still holding the port for a moment.
        for attempt in 1..=PORT_ATTEMPTS {
            match self.launch() {
                Ok(()) => return,
                Err(StartFailure::PortInUse) if attempt < PORT_ATTEMPTS => {
                    sleep(Duration::from_millis(200))
                }
                Err(StartFailure::PortInUse) => panic!(
                    "cannot restart slapd: its ports were taken; log:\n{}",
                    self.log_text()
                ),
            }
        }
    }

    /// One start: spawn slapd in the foreground and wait until a bind works.
    fn launch(&mut self) -> Result<(), StartFailure> {
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("open slapd log");
        let _ = writeln!(
            log,
            "==== connect-tests: starting slapd on {} and {}",
            self.url(),
            self.ldaps_url()
        );
        // Only this attempt's part of the log says whether *its* bind failed.
        let log_start = fs::metadata(&self.log).map(|m| m.len()).unwrap_or(0);
        let mut cmd = Command::new(sbin("slapd"));
        cmd.current_dir(self.dir.path())
            .arg("-f")
            .arg(self.dir.path().join("slapd.conf"))
            .arg("-h")
            .arg(format!("{}/ {}/", self.url(), self.ldaps_url()))
            // -d keeps slapd in the foreground (no fork, so the child is
            // slapd itself) and logs to stderr; `stats` logs connections and
            // operations with their results, which is what a failing test
            // wants to read. -s 0: nothing to the host's syslog.
            .args(["-d", "stats", "-s", "0"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup slapd log"))
            .stderr(log);
        let parent = std::process::id() as libc::pid_t;
        // SAFETY: prctl and getppid are async-signal-safe. slapd gets SIGKILL
        // when the thread that started it (the test) ends, even if the test
        // panics or the test binary is killed; checking the parent afterwards
        // closes the race with a parent that died before prctl.
        unsafe {
            cmd.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if libc::getppid() != parent {
                    libc::_exit(1);
                }
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start slapd (run scripts/deps.sh): {e}"));
        self.child = Some(child);
        self.wait_ready(log_start)
    }

    /// Probes with `ldapwhoami` as the admin until one succeeds, watching
    /// slapd meanwhile: if a port was taken, the probe may be talking to
    /// whoever holds it (which may accept and never answer), so slapd's exit
    /// ends the probe at once instead of waiting for it.
    fn wait_ready(&mut self, log_start: u64) -> Result<(), StartFailure> {
        let deadline = Instant::now() + START_TIMEOUT;
        let mut last_probe = String::new();
        loop {
            let mut probe = self
                .bind_command(ADMIN_DN, ADMIN_PASSWORD, &self.url())
                .args(["-o", "nettimeout=2"])
                // Bounds the wait for the bind's answer (nettimeout only
                // bounds the connect).
                .env("LDAPTIMEOUT", "2")
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap_or_else(|e| panic!("cannot run ldapwhoami (run scripts/deps.sh): {e}"));
            let probe_status = loop {
                if let Some(status) = probe.try_wait().expect("wait for ldapwhoami") {
                    break Some(status);
                }
                if self.slapd_exited() || Instant::now() > deadline {
                    let _ = probe.kill();
                    let _ = probe.wait();
                    break None;
                }
                sleep(Duration::from_millis(5));
            };
            if let Some(mut stderr) = probe.stderr.take() {
                last_probe.clear();
                let _ = std::io::Read::read_to_string(&mut stderr, &mut last_probe);
            }
            if probe_status.is_some_and(|s| s.success()) {
                return Ok(());
            }
            if let Some(status) = self.exit_status() {
                let text = self.log_text();
                let this_attempt = text.get(log_start as usize..).unwrap_or(&text);
                if this_attempt.contains("errno=98") {
                    return Err(StartFailure::PortInUse);
                }
                panic!("slapd exited ({status}) before answering; log:\n{text}");
            }
            if Instant::now() > deadline {
                self.kill();
                panic!(
                    "slapd did not answer within {START_TIMEOUT:?}; last ldapwhoami: {}; log:\n{}",
                    last_probe.trim(),
                    self.log_text()
                );
            }
            sleep(Duration::from_millis(20));
        }
    }

    /// Whether the child has exited (without reaping the status away).
    fn slapd_exited(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => !matches!(child.try_wait(), Ok(None)),
            None => true,
        }
    }

    /// The child's exit status if it has exited; it is then forgotten.
    fn exit_status(&mut self) -> Option<std::process::ExitStatus> {
        let status = match self.child.as_mut()?.try_wait() {
            Ok(Some(status)) => status,
            Ok(None) => return None,
            Err(e) => panic!("cannot wait for slapd: {e}"),
        };
        self.child = None;
        Some(status)
    }

    /// SIGTERM, then waits (5 s at most, then SIGKILL) and reaps: the
    /// directory goes away as a clean shutdown would take it. New connections
    /// are refused once this returns. Does nothing if not running.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // SAFETY: kill has no memory-safety preconditions; the pid cannot
        // have been reused, since we have not reaped the child yet.
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            match child.try_wait() {
                Ok(Some(_)) => return,
                Ok(None) if Instant::now() < deadline => sleep(Duration::from_millis(10)),
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return;
                }
            }
        }
    }

    /// SIGKILL and reap: the directory vanishes as in a crash. Does nothing
    /// if not running.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Whether slapd is still running (reaps it if it exited on its own).
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut().map(Child::try_wait) {
            Some(Ok(None)) => true,
            Some(_) => {
                self.child = None;
                false
            }
            None => false,
        }
    }

    /// slapd's process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// `ldap://127.0.0.1:PORT` (StartTLS available).
    pub fn url(&self) -> String {
        format!("ldap://{}", self.host_port())
    }

    /// `ldaps://127.0.0.1:PORT2`.
    pub fn ldaps_url(&self) -> String {
        format!("ldaps://{}", self.ldaps_host_port())
    }

    /// `127.0.0.1:PORT` of the plain (StartTLS) listener.
    pub fn host_port(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `127.0.0.1:PORT2` of the ldaps listener.
    pub fn ldaps_host_port(&self) -> String {
        format!("127.0.0.1:{}", self.ldaps_port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn ldaps_port(&self) -> u16 {
        self.ldaps_port
    }

    /// The throwaway CA (PEM) that signed the server certificate, which is
    /// valid for `IP:127.0.0.1` and `DNS:localhost`.
    pub fn ca_cert_path(&self) -> PathBuf {
        self.dir.path().join("tls/ca.pem")
    }

    /// The temporary directory holding everything (config, db, tls, log).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn base_dn(&self) -> &'static str {
        BASE_DN
    }

    /// connectd's `[LDAP "corp"]` section for this directory: its address,
    /// the read-only bind account and the people and groups bases.
    pub fn connectd_section(&self) -> String {
        format!(
            "[LDAP \"corp\"]\nServerAddress = {}\nBindDN = {}\nBindPassword = {}\n\
             UserSearchBaseDN = {}\nGroupSearchBaseDN = {}\n",
            self.host_port(),
            self.reader_dn(),
            self.reader_password(),
            self.people_dn(),
            self.groups_dn(),
        )
    }

    pub fn people_dn(&self) -> &'static str {
        PEOPLE_DN
    }

    pub fn groups_dn(&self) -> &'static str {
        GROUPS_DN
    }

    pub fn admin_dn(&self) -> &'static str {
        ADMIN_DN
    }

    pub fn admin_password(&self) -> &'static str {
        ADMIN_PASSWORD
    }

    pub fn reader_dn(&self) -> &'static str {
        READER_DN
    }

    pub fn reader_password(&self) -> &'static str {
        READER_PASSWORD
    }

    /// `uid=<uid>,ou=people,dc=example,dc=org`, with `uid` escaped as RFC 4514
    /// requires.
    pub fn user_dn(&self, uid: &str) -> String {
        format!("uid={},{PEOPLE_DN}", escape_dn_value(uid))
    }

    /// `cn=<cn>,ou=groups,dc=example,dc=org`, with `cn` escaped.
    pub fn group_dn(&self, cn: &str) -> String {
        format!("cn={},{GROUPS_DN}", escape_dn_value(cn))
    }

    /// The member a group holds when it has no user (groupOfNames requires at
    /// least one `member`): the admin DN, which is not under `ou=people`.
    pub fn placeholder_member_dn(&self) -> &'static str {
        ADMIN_DN
    }

    /// Everything slapd logged so far (all starts), for assertions and for
    /// failure messages.
    pub fn log_text(&self) -> String {
        fs::read(&self.log)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// An OpenLDAP client command (`ldapsearch`, `ldapwhoami`, …) that trusts
    /// this directory's CA (`LDAPTLS_CACERT`, certificate required) and runs
    /// in the temporary directory, so no `./ldaprc` of the caller's applies.
    /// Add `-H`, `-x`, `-D`, `-w` yourself.
    pub fn ldap_command(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        cmd.current_dir(self.dir.path())
            .env("LDAPTLS_CACERT", self.ca_cert_path())
            .env("LDAPTLS_REQCERT", "demand")
            .stdin(Stdio::null());
        cmd
    }

    /// `ldapwhoami -x -H <url> -D <dn> -w <password>`: its exit status is the
    /// LDAP result code (0 bound, 49 invalid credentials, 255 unreachable).
    pub fn bind_command(&self, dn: &str, password: &str, url: &str) -> Command {
        let mut cmd = self.ldap_command("ldapwhoami");
        cmd.args(["-x", "-H", url, "-D", dn, "-w", password]);
        cmd
    }

    /// `ldapsearch -LLL -o ldif-wrap=no` as the reader over plain LDAP; panics
    /// with stderr on failure. Returns the LDIF (values may be base64, `attr::`,
    /// when not plain ASCII).
    pub fn search_as_reader(&self, base: &str, filter: &str, attrs: &[&str]) -> String {
        let out = self
            .ldap_command("ldapsearch")
            .args(["-LLL", "-o", "ldif-wrap=no", "-x", "-H", &self.url()])
            .args(["-D", READER_DN, "-w", READER_PASSWORD, "-b", base, filter])
            .args(attrs)
            .output()
            .expect("run ldapsearch");
        assert!(
            out.status.success(),
            "ldapsearch -b {base} {filter} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Adds `uid=<uid>,ou=people,…` (inetOrgPerson + connectTestPerson) with
    /// `cn` = "given surname", `sn`, and `givenName`/`mail` unless empty,
    /// `userPassword` = `password` (plain text: a test directory), and the
    /// extra attributes `attrs`, e.g. `&[("Department", &["Engineering"])]`.
    pub fn add_user(
        &self,
        uid: &str,
        password: &str,
        given_name: &str,
        surname: &str,
        mail: &str,
        attrs: &[(&str, &[&str])],
    ) {
        let full = format!("{given_name} {surname}");
        let cn = match full.trim() {
            "" => uid,
            name => name,
        };
        let mut ldif = dn_line(&self.user_dn(uid));
        ldif.push_str(
            "changetype: add\nobjectClass: inetOrgPerson\nobjectClass: connectTestPerson\n",
        );
        ldif.push_str(&value_line("uid", uid));
        ldif.push_str(&value_line("cn", cn));
        ldif.push_str(&value_line("sn", surname));
        if !given_name.is_empty() {
            ldif.push_str(&value_line("givenName", given_name));
        }
        if !mail.is_empty() {
            ldif.push_str(&value_line("mail", mail));
        }
        ldif.push_str(&value_line("userPassword", password));
        for (attr, values) in attrs {
            for value in values.iter() {
                ldif.push_str(&value_line(attr, value));
            }
        }
        self.modify_checked(&ldif, &format!("add user {uid:?}"));
    }

    /// Replaces all values of `attr` on the user; an empty slice deletes the
    /// attribute (and is not an error if it was absent).
    pub fn set_user_attribute(&self, uid: &str, attr: &str, values: &[&str]) {
        let mut ldif = dn_line(&self.user_dn(uid));
        ldif.push_str("changetype: modify\n");
        ldif.push_str(&format!("replace: {}\n", checked_attr(attr)));
        for value in values {
            ldif.push_str(&value_line(attr, value));
        }
        ldif.push_str("-\n");
        self.modify_checked(&ldif, &format!("set {attr} of {uid:?}"));
    }

    /// Replaces the user's password.
    pub fn set_user_password(&self, uid: &str, password: &str) {
        self.set_user_attribute(uid, "userPassword", &[password]);
    }

    /// Deletes the user's entry. Like a real directory without the refint
    /// overlay, groups keep their `member` values pointing at it.
    pub fn delete_user(&self, uid: &str) {
        let mut ldif = dn_line(&self.user_dn(uid));
        ldif.push_str("changetype: delete\n");
        self.modify_checked(&ldif, &format!("delete user {uid:?}"));
    }

    /// Makes an existing user a posixAccount (RFC 2307): what a site whose
    /// files are already owned by directory uids has.
    pub fn make_posix(&self, uid: &str, uid_number: u32, gid_number: u32, home: &str, shell: &str) {
        let mut ldif = dn_line(&self.user_dn(uid));
        ldif.push_str(
            "changetype: modify
add: objectClass
objectClass: posixAccount
-
",
        );
        for (attr, value) in [
            ("uidNumber", uid_number.to_string()),
            ("gidNumber", gid_number.to_string()),
            ("homeDirectory", home.to_owned()),
            ("loginShell", shell.to_owned()),
        ] {
            ldif.push_str(&format!(
                "add: {attr}
"
            ));
            ldif.push_str(&value_line(attr, &value));
            ldif.push_str(
                "-
",
            );
        }
        self.modify_checked(&ldif, &format!("make {uid:?} a posixAccount"));
    }

    /// Adds `cn=<cn>,ou=groups,…` as an RFC 2307 posixGroup listing
    /// `member_uids` in memberUid.
    pub fn add_posix_group(&self, cn: &str, gid_number: u32, member_uids: &[&str]) {
        let mut ldif = dn_line(&self.group_dn(cn));
        ldif.push_str("changetype: add\nobjectClass: posixGroup\n");
        ldif.push_str(&value_line("cn", cn));
        ldif.push_str(&value_line("gidNumber", &gid_number.to_string()));
        for uid in member_uids {
            ldif.push_str(&value_line("memberUid", uid));
        }
        self.modify_checked(&ldif, &format!("add posixGroup {cn:?}"));
    }

    /// A `[Nameservice "corp"]` directory source for nameserviced reading
    /// this directory as the read-only service account, binding the
    /// identities connectd's `[LDAP "corp"]` section signs in.
    pub fn nameservice_section(&self) -> String {
        format!(
            "[Nameservice \"corp\"]\nURL = {}\nBindDN = {}\nBindPassword = {}\n\
             UserSearchBaseDN = {}\nGroupSearchBaseDN = {}\nIdentityProvider = ldap/corp\n",
            self.url(),
            self.reader_dn(),
            self.reader_password(),
            self.people_dn(),
            self.groups_dn(),
        )
    }

    /// Adds `cn=<cn>,ou=groups,…` (groupOfNames) whose members are the users
    /// `member_uids`; with none, its only member is `placeholder_member_dn()`.
    pub fn add_group(&self, cn: &str, member_uids: &[&str]) {
        let mut ldif = dn_line(&self.group_dn(cn));
        ldif.push_str("changetype: add\nobjectClass: groupOfNames\n");
        ldif.push_str(&value_line("cn", cn));
        if member_uids.is_empty() {
            ldif.push_str(&value_line("member", ADMIN_DN));
        }
        for uid in member_uids {
            ldif.push_str(&value_line("member", &self.user_dn(uid)));
        }
        self.modify_checked(&ldif, &format!("add group {cn:?}"));
    }

    /// Adds the user to the group, dropping the placeholder member if the
    /// group had one.
    pub fn add_member(&self, group_cn: &str, uid: &str) {
        let user = self.user_dn(uid);
        let mut ldif = dn_line(&self.group_dn(group_cn));
        ldif.push_str("changetype: modify\n");
        ldif.push_str(&format!("add: member\n{}-\n", value_line("member", &user)));
        let both = format!(
            "{ldif}delete: member\n{}-\n",
            value_line("member", ADMIN_DN)
        );
        // One atomic modify: add the user and drop the placeholder; if there
        // was no placeholder, just add.
        let out = self.modify(&both);
        if out.status.code() != Some(LDAP_NO_SUCH_ATTRIBUTE) {
            check(&out, &format!("add {uid:?} to group {group_cn:?}"));
            return;
        }
        self.modify_checked(&ldif, &format!("add {uid:?} to group {group_cn:?}"));
    }

    /// Removes the user from the group; removing the last member leaves the
    /// placeholder member (groupOfNames cannot be empty).
    pub fn remove_member(&self, group_cn: &str, uid: &str) {
        let user = self.user_dn(uid);
        let mut ldif = dn_line(&self.group_dn(group_cn));
        ldif.push_str("changetype: modify\n");
        let delete = format!("delete: member\n{}-\n", value_line("member", &user));
        let out = self.modify(&format!("{ldif}{delete}"));
        if out.status.code() != Some(LDAP_OBJECT_CLASS_VIOLATION) {
            check(&out, &format!("remove {uid:?} from group {group_cn:?}"));
            return;
        }
        let with_placeholder = format!(
            "{ldif}add: member\n{}-\n{delete}",
            value_line("member", ADMIN_DN)
        );
        self.modify_checked(
            &with_placeholder,
            &format!("remove {uid:?} from group {group_cn:?}"),
        );
    }

    /// Renames `uid=<from>` to `uid=<to>` (modrdn, the old RDN value
    /// deleted): the same entry, so the same `entryUUID`.
    pub fn rename_user(&self, from: &str, to: &str) {
        let mut ldif = dn_line(&self.user_dn(from));
        ldif.push_str("changetype: modrdn\n");
        ldif.push_str(&format!("newrdn: uid={}\n", escape_dn_value(to)));
        ldif.push_str("deleteoldrdn: 1\n");
        self.modify_checked(&ldif, &format!("rename user {from:?} to {to:?}"));
    }

    /// The user's `entryUUID` operational attribute, as slapd generated it.
    pub fn entry_uuid(&self, uid: &str) -> String {
        let out = self
            .ldap_command("ldapsearch")
            .args(["-LLL", "-o", "ldif-wrap=no", "-x", "-H", &self.url()])
            .args(["-D", ADMIN_DN, "-w", ADMIN_PASSWORD, "-s", "base", "-b"])
            .arg(self.user_dn(uid))
            .args(["(objectClass=*)", "entryUUID"])
            .output()
            .expect("run ldapsearch");
        check(&out, &format!("read entryUUID of {uid:?}"));
        let text = String::from_utf8_lossy(&out.stdout);
        text.lines()
            .find_map(|l| l.strip_prefix("entryUUID: "))
            .map(|v| v.trim().to_string())
            .unwrap_or_else(|| panic!("no entryUUID for {uid:?} in:\n{text}"))
    }

    /// Runs LDIF (with `changetype:` lines) through `ldapmodify` as the admin.
    /// Its exit status is the LDAP result code.
    pub fn modify(&self, ldif: &str) -> Output {
        let mut child = self
            .ldap_command("ldapmodify")
            .args([
                "-x",
                "-H",
                &self.url(),
                "-D",
                ADMIN_DN,
                "-w",
                ADMIN_PASSWORD,
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run ldapmodify (run scripts/deps.sh): {e}"));
        let mut stdin = child.stdin.take().expect("ldapmodify stdin");
        // Written from another thread: ldapmodify prints a line per entry,
        // and a big LDIF would otherwise fill its stdout pipe while we are
        // still writing. A write error means ldapmodify died, which its
        // status and stderr explain.
        let ldif = ldif.to_owned();
        let writer = std::thread::spawn(move || {
            let _ = stdin.write_all(ldif.as_bytes());
        });
        let out = child.wait_with_output().expect("wait for ldapmodify");
        let _ = writer.join();
        out
    }

    /// `modify`, panicking with ldapmodify's stderr (and the LDIF) on failure.
    pub fn modify_checked(&self, ldif: &str, what: &str) {
        let out = self.modify(ldif);
        if !out.status.success() {
            panic!(
                "{what}: ldapmodify failed ({}): {}\nLDIF:\n{ldif}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
    }
}

impl Drop for Slapd {
    /// Kills and reaps slapd before the temporary directory is removed.
    /// Never panics: it may run while a test is already unwinding.
    fn drop(&mut self) {
        self.kill();
    }
}

fn check(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what}: failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
}

/// An sbin program: non-root PATHs often lack /usr/sbin.
fn sbin(name: &str) -> PathBuf {
    let in_sbin = Path::new("/usr/sbin").join(name);
    if in_sbin.exists() {
        in_sbin
    } else {
        PathBuf::from(name)
    }
}

/// Two distinct free loopback ports. Both listeners are held until both
/// ports are known, so they differ; slapd binds them a moment later (and
/// `start` retries if someone else got there first).
fn free_ports() -> (u16, u16) {
    let a = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    let b = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    let ports = (
        a.local_addr().expect("local addr").port(),
        b.local_addr().expect("local addr").port(),
    );
    drop((a, b));
    ports
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run openssl (run scripts/deps.sh): {e}"));
    assert!(
        out.status.success(),
        "openssl {args:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A throwaway CA and a server certificate for 127.0.0.1 / localhost, in
/// `<root>/tls`. P-256 keys: instant to generate, and accepted by GnuTLS
/// (Debian's slapd), OpenSSL and rustls alike. The extensions are those
/// strict verifiers (webpki) insist on: CA:TRUE + keyCertSign on the CA,
/// CA:FALSE + serverAuth + subjectAltName on the server.
pub fn make_tls(root: &Path) {
    let tls = root.join("tls");
    fs::create_dir(&tls).expect("create tls directory");
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509", "-sha256", "-days", "30"];
    ca.extend(ec);
    ca.extend([
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-subj",
        "/O=connect-tests/CN=connect-tests throwaway CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ]);
    openssl(&tls, &ca);
    let mut csr = vec!["req", "-new", "-sha256"];
    csr.extend(ec);
    csr.extend([
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/O=connect-tests/CN=localhost",
    ]);
    openssl(&tls, &csr);
    fs::write(
        tls.join("server.ext"),
        "basicConstraints=critical,CA:FALSE\n\
         keyUsage=critical,digitalSignature,keyEncipherment\n\
         extendedKeyUsage=serverAuth\n\
         subjectAltName=IP:127.0.0.1,DNS:localhost\n",
    )
    .expect("write server.ext");
    openssl(
        &tls,
        &[
            "x509",
            "-req",
            "-sha256",
            "-days",
            "30",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            // A random serial (OpenSSL 3), kept in this directory.
            "-CAcreateserial",
            "-CAserial",
            "ca.srl",
            "-extfile",
            "server.ext",
            "-out",
            "server.pem",
        ],
    );
}

fn slapd_conf(root: &Path) -> String {
    let schema = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/ldap/connect-test.schema");
    let root = root.display();
    let schema = schema.display();
    format!(
        r#"# Written by connect-tests (tests/src/slapd.rs) for one test run.
include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/inetorgperson.schema
include /etc/ldap/schema/nis.schema
include "{schema}"

pidfile "{root}/slapd.pid"
argsfile "{root}/slapd.args"

modulepath /usr/lib/ldap
moduleload back_mdb

TLSCACertificateFile "{root}/tls/ca.pem"
TLSCertificateFile "{root}/tls/server.pem"
TLSCertificateKeyFile "{root}/tls/server.key"

# The root DSE and the schema hold no directory data; clients read them to
# discover extensions (StartTLS) and controls.
access to dn.base="" by * read
access to dn.base="cn=Subschema" by * read
# Simple binds need `auth` on the password; only the reader may read it.
access to attrs=userPassword
    by dn.exact="{READER_DN}" read
    by * auth
access to *
    by dn.exact="{READER_DN}" read
    by self read
    by * none

database mdb
suffix "{BASE_DN}"
rootdn "{ADMIN_DN}"
rootpw {ADMIN_PASSWORD}
directory "{root}/db"
maxsize 268435456
# A test directory: durability across a host crash is not needed, speed is.
dbnosync
index objectClass eq
index uid,cn,mail eq,sub
index member eq
index entryUUID eq
"#
    )
}

fn base_ldif() -> String {
    format!(
        "dn: {BASE_DN}\n\
         objectClass: dcObject\n\
         objectClass: organization\n\
         o: Example\n\
         dc: example\n\
         \n\
         dn: {PEOPLE_DN}\n\
         objectClass: organizationalUnit\n\
         ou: people\n\
         \n\
         dn: {GROUPS_DN}\n\
         objectClass: organizationalUnit\n\
         ou: groups\n\
         \n\
         dn: {READER_DN}\n\
         objectClass: organizationalRole\n\
         objectClass: simpleSecurityObject\n\
         cn: reader\n\
         description: read-only service account\n\
         userPassword: {READER_PASSWORD}\n"
    )
}

/// RFC 4514 escaping of an attribute value inside a DN.
fn escape_dn_value(value: &str) -> String {
    let count = value.chars().count();
    let mut out = String::with_capacity(value.len());
    for (i, c) in value.chars().enumerate() {
        match c {
            ',' | '+' | '"' | '\\' | '<' | '>' | ';' | '=' => {
                out.push('\\');
                out.push(c);
            }
            '\0' => out.push_str("\\00"),
            ' ' if i == 0 || i + 1 == count => out.push_str("\\ "),
            '#' if i == 0 => out.push_str("\\#"),
            _ => out.push(c),
        }
    }
    out
}

/// Attribute descriptions go into LDIF verbatim, so only allow what a name
/// (with options) or a numeric OID can contain.
fn checked_attr(attr: &str) -> &str {
    let ok = !attr.is_empty()
        && attr
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | ';' | '.'));
    assert!(ok, "not an LDAP attribute description: {attr:?}");
    attr
}

/// `dn:: <base64>`: the DN may hold anything the caller passed.
fn dn_line(dn: &str) -> String {
    format!("dn:: {}\n", base64(dn.as_bytes()))
}

/// `attr:: <base64>`: always base64, so no value (newlines, leading space,
/// `:`, `<`, non-ASCII) can be misread as LDIF syntax.
fn value_line(attr: &str, value: &str) -> String {
    format!("{}:: {}\n", checked_attr(attr), base64(value.as_bytes()))
}

fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b1 = chunk.get(1).copied().unwrap_or(0);
        let b2 = chunk.get(2).copied().unwrap_or(0);
        let n = (u32::from(chunk[0]) << 16) | (u32::from(b1) << 8) | u32::from(b2);
        let sextet = |shift: u32| ALPHABET[(n >> shift) as usize & 63] as char;
        out.push(sextet(18));
        out.push(sextet(12));
        out.push(if chunk.len() > 1 { sextet(6) } else { '=' });
        out.push(if chunk.len() > 2 { sextet(0) } else { '=' });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648_vectors() {
        for (plain, encoded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(plain.as_bytes()), encoded);
        }
    }

    #[test]
    fn dn_values_are_escaped() {
        assert_eq!(escape_dn_value("a,b+c"), "a\\,b\\+c");
        assert_eq!(escape_dn_value(" #x "), "\\ #x\\ ");
        assert_eq!(escape_dn_value("#x"), "\\#x");
        assert_eq!(escape_dn_value("o'brien"), "o'brien");
    }
}
