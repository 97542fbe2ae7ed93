//! The smallest Hermit application, linked exactly like astrid.img: the baseline the
//! boot benchmark divides by. It reports success through the same exit path.

// The baseline prints as a bare application does, not through the image's console path.
#[allow(clippy::disallowed_macros)]
fn main() {
    println!("hello from Hermit");
    astrid_kernel::platform::exit(astrid_kernel::exit::Status::Ok);
}
