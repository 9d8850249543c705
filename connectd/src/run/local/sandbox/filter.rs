//! The system-call filter every content process and build runs under,
//! compiled to BPF by `seccompiler` before the fork.
//!
//! It refuses (EPERM, as Docker's default profile does) what content never
//! needs and what would undo or get around the sandbox: tracing and reading
//! other processes (`ptrace`, `process_vm_readv`), the kernel keyring,
//! mounting and namespaces (`mount`, `setns`, `unshare`, `clone` with a
//! namespace flag), loading code into the kernel (`bpf`, modules, `kexec`),
//! `perf_event_open`, `userfaultfd` and `io_uring` (frequent sources of
//! kernel exploits), and a few administrative calls. Everything else is
//! allowed: the filter is a deny list, so a new system call a runtime
//! starts using keeps working.
//!
//! `clone3` gets ENOSYS instead: its flags sit in memory a filter cannot
//! read, and ENOSYS makes glibc fall back to `clone`, whose flags it can.

use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

/// Refused outright.
const DENIED: &[libc::c_long] = &[
    libc::SYS_ptrace,
    libc::SYS_process_vm_readv,
    libc::SYS_process_vm_writev,
    libc::SYS_keyctl,
    libc::SYS_add_key,
    libc::SYS_request_key,
    libc::SYS_mount,
    libc::SYS_umount2,
    libc::SYS_pivot_root,
    libc::SYS_fsopen,
    libc::SYS_fsconfig,
    libc::SYS_fsmount,
    libc::SYS_fspick,
    libc::SYS_move_mount,
    libc::SYS_open_tree,
    libc::SYS_mount_setattr,
    libc::SYS_setns,
    libc::SYS_unshare,
    libc::SYS_kexec_load,
    libc::SYS_kexec_file_load,
    libc::SYS_bpf,
    libc::SYS_perf_event_open,
    libc::SYS_userfaultfd,
    libc::SYS_io_uring_setup,
    libc::SYS_io_uring_enter,
    libc::SYS_io_uring_register,
    libc::SYS_init_module,
    libc::SYS_finit_module,
    libc::SYS_delete_module,
    libc::SYS_swapon,
    libc::SYS_swapoff,
    libc::SYS_reboot,
    libc::SYS_acct,
    libc::SYS_quotactl,
    libc::SYS_open_by_handle_at,
    libc::SYS_name_to_handle_at,
    libc::SYS_syslog,
    libc::SYS_vhangup,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_iopl,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_ioperm,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_modify_ldt,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_uselib,
];

/// `clone` flags that would make a new namespace.
const NAMESPACE_FLAGS: [libc::c_int; 7] = [
    libc::CLONE_NEWUSER,
    libc::CLONE_NEWNS,
    libc::CLONE_NEWPID,
    libc::CLONE_NEWNET,
    libc::CLONE_NEWUTS,
    libc::CLONE_NEWIPC,
    libc::CLONE_NEWCGROUP,
];

/// The filters to install, in order: the deny list, then `clone3`.
pub(super) fn content_filters() -> Result<Vec<BpfProgram>, String> {
    let arch = TargetArch::try_from(std::env::consts::ARCH).map_err(|e| {
        format!(
            "no system-call filter for {}: {e:?}",
            std::env::consts::ARCH
        )
    })?;
    let compile = |rules: BTreeMap<i64, Vec<SeccompRule>>, action| {
        let filter = SeccompFilter::new(rules, SeccompAction::Allow, action, arch)
            .map_err(|e| format!("the system-call filter does not compile: {e}"))?;
        BpfProgram::try_from(filter)
            .map_err(|e| format!("the system-call filter does not compile: {e}"))
    };

    let mut denied: BTreeMap<i64, Vec<SeccompRule>> =
        DENIED.iter().map(|&call| (call, Vec::new())).collect();
    // Any of the flags in clone's first argument: one rule per flag, as
    // rules of one call are alternatives.
    let clone_rules = NAMESPACE_FLAGS
        .iter()
        .map(|&flag| {
            let flag = flag as u64;
            let condition = SeccompCondition::new(
                0,
                SeccompCmpArgLen::Qword,
                SeccompCmpOp::MaskedEq(flag),
                flag,
            )
            .and_then(|c| SeccompRule::new(vec![c]));
            condition.map_err(|e| format!("the system-call filter does not compile: {e}"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    denied.insert(libc::SYS_clone, clone_rules);
    let deny = compile(denied, SeccompAction::Errno(libc::EPERM as u32))?;

    let clone3 = BTreeMap::from([(libc::SYS_clone3, Vec::new())]);
    let no_clone3 = compile(clone3, SeccompAction::Errno(libc::ENOSYS as u32))?;
    Ok(vec![deny, no_clone3])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_filters_compile_for_this_machine() {
        let filters = content_filters().expect("filters");
        assert_eq!(filters.len(), 2);
        assert!(filters.iter().all(|f| !f.is_empty()));
    }
}
