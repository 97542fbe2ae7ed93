//! astrid.img's entry point (and the hosted-mode binary): `astrid [capsule.wasm…]`.

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    astrid_kernel::say!("astrid: astrid.img {} ({})", env!("CARGO_PKG_VERSION"), std::env::consts::OS);
    let status = astrid_kernel::launch::main(&args, astrid_kernel::settings::Settings::from_env());
    astrid_kernel::platform::exit(status)
}
