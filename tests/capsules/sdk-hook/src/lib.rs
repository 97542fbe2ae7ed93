//! sdk-hook: an Astrid SDK 0.7.2 interceptor. Its only handler is `greet`, reached
//! through the `astrid-hook-trigger` export; it has no `#[astrid::run]`, so the SDK
//! exports an empty `run` stub.

use astrid_sdk::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Default)]
pub struct SdkHook;

#[derive(Deserialize)]
pub struct Greeting {
    name: String,
}

#[derive(Serialize)]
pub struct Reply {
    greeting: String,
}

#[capsule]
impl SdkHook {
    #[astrid::interceptor("greet")]
    fn greet(&self, args: Greeting) -> Result<Reply, SysError> {
        log::info(format!("sdk-hook: greeting {}", args.name));
        Ok(Reply { greeting: format!("hello, {}", args.name) })
    }
}
