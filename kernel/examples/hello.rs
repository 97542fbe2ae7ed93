//! The smallest Hermit application, linked exactly like astrid.img: the baseline the
//! boot benchmark divides by. It reports success through the same exit path.

fn main() {
    println!("hello from Hermit");
    astrid_kernel::platform::exit(astrid_kernel::exit::Status::Ok);
}
