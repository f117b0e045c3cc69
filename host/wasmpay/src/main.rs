//! The `wasmpay` binary: the daemon, clients for people, and tools for
//! operators and plugin authors. Everything lives in [`wasmpay::cli`], so
//! that the tests can build this same file as a binary of their own.

fn main() -> std::process::ExitCode {
    wasmpay::cli::main()
}
