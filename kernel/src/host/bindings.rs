//! The generated bindings of every `astrid:*` package the image serves, and nothing else.
//! Resource types are the providers' own (`with:`): the bindings name them, the
//! providers never name the bindings.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "astrid-unikernel:image/capsule-host-testing",
    imports: { default: trappable },
    with: {
        "astrid:io/error.error": crate::sources::IoError,
        "astrid:io/poll.pollable": crate::wait::Pollable,
        "astrid:io/streams.input-stream": crate::sources::InputStream,
        "astrid:io/streams.output-stream": crate::sources::OutputStream,
        "astrid:ipc/host.subscription": crate::ipc::Subscription,
        "astrid:net/host.tcp-listener": crate::net::TcpListener,
        "astrid:net/host.tcp-stream": crate::net::TcpStream,
        "astrid:net/host.udp-socket": crate::net::UdpSocket,
        "astrid:net/host.unix-listener": crate::net::UnixListener,
    },
});
