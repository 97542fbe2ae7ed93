//! astrid.img's entry point (and the hosted-mode binary): `astrid [capsule.wasm…]`.

fn main() {
    astrid_kernel::platform::phases::mark("main");
    let args: Vec<String> = std::env::args().skip(1).collect();
    astrid_kernel::say!("astrid: astrid.img {} ({})", env!("CARGO_PKG_VERSION"), std::env::consts::OS);
    astrid_kernel::platform::phases::mark("first-line");
    let settings = astrid_kernel::settings::Settings::from_env();
    astrid_kernel::platform::phases::mark("settings");
    let status = astrid_kernel::launch::main(&args, settings);
    astrid_kernel::platform::phases::mark("returned");
    if astrid_kernel::settings::current().boot_phases.0 {
        astrid_kernel::say!("{}", astrid_kernel::platform::phases::line());
    }
    astrid_kernel::platform::exit(status)
}
