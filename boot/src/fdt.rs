//! The flattened device tree handed to the kernel.
//! Kernel 0.11 on x86_64 learns its RAM only from `/memory` nodes, its command line from
//! `/chosen/bootargs` (when the boot info has none) and the TSC rate from `/hermit,tsc`.

use alloc::format;
use alloc::vec::Vec;
use core::ops::Range;

use vm_fdt::FdtWriter;

use crate::{BootError, FailureCode};

/// Root `compatible`: anything but `hermit,uefi`, which would make the kernel take only the
/// largest memory node and assume page tables it did not get.
pub const COMPATIBLE: &str = "astrid,multiboot";

/// What goes into the device tree.
#[derive(Clone, Debug)]
pub struct FdtParams<'a> {
    /// RAM regions, one `/memory@<start>` node each.
    pub memory: &'a [Range<u64>],
    /// The kernel command line, as `/chosen/bootargs`.
    pub bootargs: &'a str,
    /// Calibrated TSC frequency; without it the node is left out and the kernel measures.
    pub tsc_khz: Option<u32>,
    /// Where a copy of the ACPI RSDP lies (`/hermit,rsdp`, which kernel 0.11 reads before it
    /// searches the BIOS areas, where UEFI firmware leaves nothing).
    pub rsdp: Option<Range<u64>>,
}

/// Serialises the device tree blob.
pub fn build(params: &FdtParams<'_>) -> Result<Vec<u8>, BootError> {
    write(params).map_err(|e| {
        BootError::new(
            FailureCode::Other,
            format!("cannot build the device tree: {e}"),
            "report this as a loader bug",
        )
    })
}

fn write(params: &FdtParams<'_>) -> Result<Vec<u8>, vm_fdt::Error> {
    let mut fdt = FdtWriter::new()?;
    let root = fdt.begin_node("")?;
    fdt.property_string("compatible", COMPATIBLE)?;
    // Two cells each, so addresses and sizes above 4 GiB fit.
    fdt.property_u32("#address-cells", 2)?;
    fdt.property_u32("#size-cells", 2)?;

    let chosen = fdt.begin_node("chosen")?;
    fdt.property_string("bootargs", params.bootargs)?;
    fdt.end_node(chosen)?;

    for region in params.memory.iter().filter(|r| !r.is_empty()) {
        let node = fdt.begin_node(&format!("memory@{:x}", region.start))?;
        fdt.property_string("device_type", "memory")?;
        fdt.property_array_u64("reg", &[region.start, region.end - region.start])?;
        fdt.end_node(node)?;
    }

    if let Some(rsdp) = &params.rsdp {
        let node = fdt.begin_node("hermit,rsdp")?;
        fdt.property_array_u64("reg", &[rsdp.start, rsdp.end - rsdp.start])?;
        fdt.end_node(node)?;
    }

    if let Some(khz) = params.tsc_khz {
        let tsc = fdt.begin_node("hermit,tsc")?;
        fdt.property_u32("khz", khz)?;
        fdt.end_node(tsc)?;
    }

    fdt.end_node(root)?;
    fdt.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;

    /// Reads the blob back with the fdt crate the kernel uses, through the kernel's queries.
    #[test]
    fn kernel_reads_what_we_write() {
        let memory = [0x10_0000..0x1ffe_0000, 0x1_0000_0000..0x1_4000_0000];
        let blob = build(&FdtParams {
            memory: &memory,
            bootargs: "env=ASTRID_BOOT=multiboot -- a 'b c'",
            tsc_khz: Some(2_496_000),
            rsdp: Some(0x20_1000..0x20_1024),
        })
        .unwrap();
        let fdt = fdt::Fdt::new(&blob).unwrap();
        assert_eq!(fdt.root().compatible().first(), COMPATIBLE);
        assert_ne!(fdt.root().compatible().first(), "hermit,uefi");
        assert_eq!(
            fdt.chosen().bootargs(),
            Some("env=ASTRID_BOOT=multiboot -- a 'b c'")
        );
        let regions: Vec<(usize, usize)> = fdt
            .find_all_nodes("/memory")
            .map(|m| {
                let r = m.reg().unwrap().next().unwrap();
                (r.starting_address as usize, r.size.unwrap())
            })
            .collect();
        assert_eq!(
            regions,
            [(0x10_0000, 0x1fee_0000), (0x1_0000_0000, 0x4000_0000)]
        );
        let khz = fdt
            .find_node("/hermit,tsc")
            .unwrap()
            .property("khz")
            .unwrap()
            .as_usize();
        assert_eq!(khz, Some(2_496_000));
        // The kernel's own query (`env::rsdp`): the first reg entry's address.
        let rsdp = fdt
            .find_node("/hermit,rsdp")
            .unwrap()
            .reg()
            .unwrap()
            .next()
            .unwrap();
        assert_eq!(
            (rsdp.starting_address as usize, rsdp.size),
            (0x20_1000, Some(0x24))
        );
        // The kernel logs the tree with `{:#?}`; that must not panic either.
        assert!(format!("{fdt:#?}").contains("memory@100000"));
    }

    #[test]
    fn tsc_node_is_optional() {
        let blob = build(&FdtParams {
            memory: &[0x10_0000..0x200_0000],
            bootargs: "",
            tsc_khz: None,
            rsdp: None,
        })
        .unwrap();
        let fdt = fdt::Fdt::new(&blob).unwrap();
        assert!(fdt.find_node("/hermit,tsc").is_none());
        assert!(fdt.find_node("/hermit,rsdp").is_none());
        assert_eq!(fdt.find_all_nodes("/memory").count(), 1);
        assert_eq!(fdt.chosen().bootargs(), Some(""));
    }

    #[test]
    fn nul_in_bootargs_is_an_error() {
        let err = build(&FdtParams {
            memory: &[],
            bootargs: "a\0b",
            tsc_khz: None,
            rsdp: None,
        })
        .unwrap_err();
        assert_eq!(err.code, FailureCode::Other);
        assert!(!err.what.to_string().is_empty());
    }
}
