//! glibc loads the module as `libnss_connect.so.2`; give the library that
//! soname so the installed file and its ELF header agree.
fn main() {
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libnss_connect.so.2");
}
