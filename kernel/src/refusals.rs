//! The SDK packages this image does not serve yet, each answering with its interface's
//! own typed refusal (never a trap, never a missing import), audited as `refused`:
//! - uplink and identity: `capability-denied`;
//! - approval: the decision `denied` (there is no human in the image to approve);
//! - elicit: `not-in-lifecycle` (the image runs no install or upgrade lifecycle).

use std::time::Instant;

use crate::engine::state::CapsuleState;
use crate::io::astrid::{approval, elicit, identity, uplink};
use crate::io::{Counts, audit};

fn refused(state: &CapsuleState, function: &str, started: Instant, why: &str) {
    audit(state, function, started, Counts::default(), Some(&format!("refused: {why}")));
}

impl uplink::host::Host for CapsuleState {
    fn uplink_register(&mut self, _name: String, _platform: String, _profile: uplink::host::UplinkProfile) -> wasmtime::Result<Result<String, uplink::host::ErrorCode>> {
        refused(self, "astrid:uplink/host.uplink-register", Instant::now(), "capability-denied");
        Ok(Err(uplink::host::ErrorCode::CapabilityDenied))
    }

    fn uplink_send(&mut self, _uplink_id: String, _user: String, _content: String) -> wasmtime::Result<Result<bool, uplink::host::ErrorCode>> {
        refused(self, "astrid:uplink/host.uplink-send", Instant::now(), "capability-denied");
        Ok(Err(uplink::host::ErrorCode::CapabilityDenied))
    }
}

impl identity::host::Host for CapsuleState {
    fn identity_resolve(&mut self, _r: identity::host::IdentityResolveRequest) -> wasmtime::Result<Result<identity::host::IdentityResolveResponse, identity::host::ErrorCode>> {
        refused(self, "astrid:identity/host.identity-resolve", Instant::now(), "capability-denied");
        Ok(Err(identity::host::ErrorCode::CapabilityDenied))
    }

    fn identity_link(&mut self, _r: identity::host::IdentityLinkRequest) -> wasmtime::Result<Result<(), identity::host::ErrorCode>> {
        refused(self, "astrid:identity/host.identity-link", Instant::now(), "capability-denied");
        Ok(Err(identity::host::ErrorCode::CapabilityDenied))
    }

    fn identity_unlink(&mut self, _r: identity::host::IdentityUnlinkRequest) -> wasmtime::Result<Result<(), identity::host::ErrorCode>> {
        refused(self, "astrid:identity/host.identity-unlink", Instant::now(), "capability-denied");
        Ok(Err(identity::host::ErrorCode::CapabilityDenied))
    }

    fn identity_create_user(&mut self, _r: identity::host::IdentityCreateUserRequest) -> wasmtime::Result<Result<identity::host::IdentityCreateUserResponse, identity::host::ErrorCode>> {
        refused(self, "astrid:identity/host.identity-create-user", Instant::now(), "capability-denied");
        Ok(Err(identity::host::ErrorCode::CapabilityDenied))
    }

    fn identity_list_links(&mut self, _user: String) -> wasmtime::Result<Result<Vec<identity::host::PlatformLink>, identity::host::ErrorCode>> {
        refused(self, "astrid:identity/host.identity-list-links", Instant::now(), "capability-denied");
        Ok(Err(identity::host::ErrorCode::CapabilityDenied))
    }
}

impl approval::host::Host for CapsuleState {
    fn request_approval(&mut self, _r: approval::host::ApprovalRequest) -> wasmtime::Result<Result<approval::host::ApprovalResponse, approval::host::ErrorCode>> {
        refused(self, "astrid:approval/host.request-approval", Instant::now(), "denied: no approver in the image");
        Ok(Ok(approval::host::ApprovalResponse { decision: approval::host::ApprovalDecision::Denied }))
    }
}

impl elicit::host::Host for CapsuleState {
    fn elicit(&mut self, _r: elicit::host::ElicitRequest) -> wasmtime::Result<Result<elicit::host::ElicitResponse, elicit::host::ErrorCode>> {
        refused(self, "astrid:elicit/host.elicit", Instant::now(), "not-in-lifecycle");
        Ok(Err(elicit::host::ErrorCode::NotInLifecycle))
    }

    fn has_secret(&mut self, _key: String) -> wasmtime::Result<Result<bool, elicit::host::ErrorCode>> {
        refused(self, "astrid:elicit/host.has-secret", Instant::now(), "not-in-lifecycle");
        Ok(Err(elicit::host::ErrorCode::NotInLifecycle))
    }
}

/// Adds the refusing packages to a capsule's linker.
pub fn add_to_linker(linker: &mut wasmtime::component::Linker<CapsuleState>) -> wasmtime::Result<()> {
    use wasmtime::component::HasSelf;
    uplink::host::add_to_linker::<_, HasSelf<_>>(linker, |s| s)?;
    identity::host::add_to_linker::<_, HasSelf<_>>(linker, |s| s)?;
    approval::host::add_to_linker::<_, HasSelf<_>>(linker, |s| s)?;
    elicit::host::add_to_linker::<_, HasSelf<_>>(linker, |s| s)?;
    Ok(())
}
