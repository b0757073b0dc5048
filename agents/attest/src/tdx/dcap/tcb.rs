//! Where a quote's platform stands in Intel's signed collateral: the quoting enclave
//! against the QE identity, the CPU, PCE and TDX module against the TCB info. Each
//! yields Intel's status for the component and the advisories that apply to it.

use std::cmp::Reverse;

use dcap_qvl::intel::PckExtension;
use dcap_qvl::qe_identity::QeIdentity;
use dcap_qvl::quote::{EnclaveReport, TDReport10};
use dcap_qvl::tcb_info::{TcbInfo, TcbStatus, TcbStatusWithAdvisory};

use super::super::error::TdxVerifyError;

/// SGX ATTRIBUTES bit 1: the enclave runs in debug mode.
const SGX_ATTRIBUTE_DEBUG: u8 = 0x02;

fn untrusted_qe(reason: String) -> TdxVerifyError {
    TdxVerifyError::BadSignature {
        reason: format!("the quoting enclave is not Intel's TD QE: {reason}"),
    }
}

fn collateral(reason: String) -> TdxVerifyError {
    TdxVerifyError::CollateralInvalid { reason }
}

/// The QE report (already verified to be signed by the PCK key) must be Intel's TD
/// quoting enclave as the QE identity describes it; its ISVSVN picks the TCB level.
pub(super) fn qe_status(
    qe: &EnclaveReport,
    identity: &QeIdentity,
) -> Result<TcbStatusWithAdvisory, TdxVerifyError> {
    if identity.id != "TD_QE" || identity.version != 2 {
        return Err(collateral(format!(
            "the QE identity is {} version {}, a TDX quote needs TD_QE version 2",
            identity.id, identity.version
        )));
    }
    if qe.mr_signer != identity.mrsigner {
        return Err(untrusted_qe(format!(
            "MRSIGNER {} is not {}",
            hex::encode(qe.mr_signer),
            hex::encode(identity.mrsigner)
        )));
    }
    if qe.isv_prod_id != identity.isvprodid {
        return Err(untrusted_qe(format!(
            "ISVPRODID {} is not {}",
            qe.isv_prod_id, identity.isvprodid
        )));
    }
    let mask = u32::from_le_bytes(identity.miscselect_mask);
    if qe.misc_select & mask != u32::from_le_bytes(identity.miscselect) & mask {
        return Err(untrusted_qe(format!(
            "MISCSELECT {:08x} does not match {} under mask {mask:08x}",
            qe.misc_select,
            hex::encode(identity.miscselect)
        )));
    }
    let masked = |a: &[u8; 16]| -> Vec<u8> {
        a.iter()
            .zip(identity.attributes_mask)
            .map(|(x, m)| x & m)
            .collect()
    };
    if masked(&qe.attributes) != masked(&identity.attributes) {
        return Err(untrusted_qe(format!(
            "ATTRIBUTES {} do not match {} under mask {}",
            hex::encode(qe.attributes),
            hex::encode(identity.attributes),
            hex::encode(identity.attributes_mask)
        )));
    }
    if qe.attributes[0] & SGX_ATTRIBUTE_DEBUG != 0 {
        return Err(untrusted_qe("it runs in debug mode".into()));
    }
    // The highest level the QE's ISVSVN reaches, whatever order the JSON lists them in.
    let level = identity
        .tcb_levels
        .iter()
        .filter(|l| l.tcb.isvsvn <= qe.isv_svn)
        .max_by_key(|l| l.tcb.isvsvn)
        .ok_or_else(|| {
            collateral(format!(
                "the QE's ISVSVN {} is below every TCB level of the QE identity",
                qe.isv_svn
            ))
        })?;
    Ok(TcbStatusWithAdvisory::new(
        level.tcb_status,
        level.advisory_ids.clone(),
    ))
}

/// The platform's TCB level (CPU SVNs and PCE SVN from the PCK certificate, the TDX
/// module's SVNs from the TD report) in the TCB info, converged with the TDX module's
/// own level; the module must be signed by the signer the TCB info names.
pub(super) fn platform_status(
    info: &TcbInfo,
    pck: &PckExtension,
    td: &TDReport10,
) -> Result<TcbStatusWithAdvisory, TdxVerifyError> {
    // Version 3 is what Intel's PCS serves for TDX; a later one may mean other rules.
    if info.id != "TDX" || info.version != 3 {
        return Err(collateral(format!(
            "the TCB info is {} version {}, a TDX quote needs TDX version 3",
            info.id, info.version
        )));
    }
    let hex_field = |what: &str, value: &str| {
        hex::decode(value).map_err(|e| collateral(format!("TCB info {what} {value:?}: {e}")))
    };
    if hex_field("fmspc", &info.fmspc)? != pck.fmspc {
        return Err(collateral(format!(
            "the TCB info is for FMSPC {}, the PCK certificate's platform is FMSPC {}",
            info.fmspc.to_ascii_lowercase(),
            hex::encode(pck.fmspc)
        )));
    }
    if hex_field("pceId", &info.pce_id)? != pck.pce_id {
        return Err(collateral(format!(
            "the TCB info is for PCE {}, the PCK certificate's is {}",
            info.pce_id,
            hex::encode(&pck.pce_id)
        )));
    }
    check_module_signer(info, td)?;
    status_at(info, pck, &td.tee_tcb_svn)
}

/// The status of the platform with the TDX module at `tee_tcb_svn`: the highest TCB
/// level it meets, converged with the module's own level. (A TD 1.5 is appraised at
/// its launch SVNs and at its current ones, which a TD-preserving update changes.)
pub(super) fn status_at(
    info: &TcbInfo,
    pck: &PckExtension,
    tee_tcb_svn: &[u8; 16],
) -> Result<TcbStatusWithAdvisory, TdxVerifyError> {
    let module = module_level(info, tee_tcb_svn)?;
    // Highest level first, as Intel's QVL orders them: by the SGX components, then the
    // PCE SVN, then the TDX components.
    let mut levels: Vec<_> = info.tcb_levels.iter().collect();
    levels.sort_by_key(|l| {
        Reverse((
            l.tcb.sgx_components.clone(),
            l.tcb.pce_svn,
            l.tcb.tdx_components.clone(),
        ))
    });
    let mut matched = None;
    for level in levels {
        let short = level
            .shortfalls(&pck.cpu_svn, pck.pce_svn, Some(tee_tcb_svn))
            .map_err(|e| collateral(format!("TCB info level: {e:#}")))?;
        if short.is_empty() {
            matched = Some(level);
            break;
        }
    }
    let level = matched.ok_or_else(|| {
        collateral(format!(
            "no TCB level of the TCB info is met by CPUSVN {}, PCESVN {}, TEE_TCB_SVN {}",
            hex::encode(pck.cpu_svn),
            pck.pce_svn,
            hex::encode(tee_tcb_svn)
        ))
    })?;
    let platform = TcbStatusWithAdvisory::new(level.tcb_status, level.advisory_ids.clone());
    Ok(match module {
        Some(module) => platform.merge(&module),
        None => platform,
    })
}

/// Checks the TDX module's signer and SEAM attributes against the identity the TCB
/// info gives for its version (`TEE_TCB_SVN[1]`; version 0 uses the base `tdxModule`).
fn check_module_signer(info: &TcbInfo, td: &TDReport10) -> Result<(), TdxVerifyError> {
    let identity = info
        .tdx_module_identity(&td.tee_tcb_svn)
        .map_err(|e| collateral(format!("{e:#}")))?;
    let (mrsigner, attributes, mask) = match (identity, &info.tdx_module) {
        (Some(id), _) => (&id.mrsigner, &id.attributes, &id.attributes_mask),
        (None, Some(base)) => (&base.mrsigner, &base.attributes, &base.attributes_mask),
        (None, None) => {
            return Err(collateral(
                "the TCB info names no TDX module (no tdxModule)".into(),
            ));
        }
    };
    let decode = |what: &str, value: &str, len: usize| -> Result<Vec<u8>, TdxVerifyError> {
        match hex::decode(value) {
            Ok(v) if v.len() == len => Ok(v),
            _ => Err(collateral(format!(
                "TDX module {what} {value:?} is not {len} bytes of hex"
            ))),
        }
    };
    let mrsigner = decode("mrsigner", mrsigner, 48)?;
    let attributes = decode("attributes", attributes, 8)?;
    let mask = decode("attributesMask", mask, 8)?;
    if td.mr_signer_seam[..] != mrsigner[..] {
        return Err(TdxVerifyError::BadSignature {
            reason: format!(
                "the TDX module is signed by {}, Intel's TCB info names {}",
                hex::encode(td.mr_signer_seam),
                hex::encode(&mrsigner)
            ),
        });
    }
    let fits = td
        .seam_attributes
        .iter()
        .zip(&attributes)
        .zip(&mask)
        .all(|((got, want), m)| got & m == want & m && got & !m == 0);
    if !fits {
        return Err(TdxVerifyError::BadSignature {
            reason: format!(
                "the TDX module's SEAM attributes {} do not match {} under mask {}",
                hex::encode(td.seam_attributes),
                hex::encode(&attributes),
                hex::encode(&mask)
            ),
        });
    }
    Ok(())
}

/// The TDX module's own TCB level at `tee_tcb_svn` (its ISVSVN is byte 0), where the
/// TCB info has levels for its version (byte 1).
fn module_level(
    info: &TcbInfo,
    tee_tcb_svn: &[u8; 16],
) -> Result<Option<TcbStatusWithAdvisory>, TdxVerifyError> {
    let Some(identity) = info
        .tdx_module_identity(tee_tcb_svn)
        .map_err(|e| collateral(format!("{e:#}")))?
    else {
        return Ok(None);
    };
    let level = identity
        .tcb_levels
        .iter()
        .filter(|l| l.shortfall(tee_tcb_svn).is_none())
        .max_by_key(|l| l.tcb.isvsvn)
        .ok_or_else(|| {
            collateral(format!(
                "the TDX module's ISVSVN {} is below every level of {}",
                tee_tcb_svn[0], identity.id
            ))
        })?;
    Ok(Some(TcbStatusWithAdvisory::new(
        level.tcb_status,
        level.advisory_ids.clone(),
    )))
}

/// A TD 1.5 launched on a TCB since made out of date by a TD-preserving update of the
/// TDX module: Intel's QVL then says the TD should be relaunched, rather than that the
/// platform is out of date. `launch` is the converged status at launch, `current` the
/// one at the current SVNs.
pub(super) fn relaunch_status(launch: TcbStatus, current: TcbStatus) -> TcbStatus {
    use TcbStatus::*;
    let needs_configuration = |s: TcbStatus| {
        matches!(
            s,
            ConfigurationNeeded
                | OutOfDateConfigurationNeeded
                | ConfigurationAndSWHardeningNeeded
                | TDRelaunchAdvisedConfigurationNeeded
        )
    };
    let launch_out_of_date = matches!(launch, OutOfDate | OutOfDateConfigurationNeeded);
    let current_fine = matches!(
        current,
        UpToDate | SWHardeningNeeded | ConfigurationNeeded | ConfigurationAndSWHardeningNeeded
    );
    if !(launch_out_of_date && current_fine) {
        return launch;
    }
    if needs_configuration(launch) || needs_configuration(current) {
        TDRelaunchAdvisedConfigurationNeeded
    } else {
        TDRelaunchAdvised
    }
}

/// A revoked platform or QE is refused whatever the policy says.
pub(super) fn refuse_revoked(status: &TcbStatusWithAdvisory) -> Result<(), TdxVerifyError> {
    if status.status == TcbStatus::Revoked {
        return Err(TdxVerifyError::TcbStatus {
            got: status.status.to_string(),
            allowed: Vec::new(),
        });
    }
    Ok(())
}

/// The policy checks alone, on the genuine Azure quote's QE report, PCK certificate and
/// TD report against Intel's collateral for it, each changed in one field (signatures
/// are not in play here: the collateral is taken as already verified).
#[cfg(test)]
mod tests {
    use dcap_qvl::quote::Quote;

    use super::*;

    struct Parts {
        qe: EnclaveReport,
        pck: PckExtension,
        td: TDReport10,
        info: TcbInfo,
        identity: QeIdentity,
    }

    fn parts() -> Parts {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/azure");
        let raw = std::fs::read(format!("{dir}/tdx-td-quote.bin")).expect("quote");
        let quote = Quote::parse(&raw).expect("parses");
        let chain = dcap_qvl::intel::extract_cert_chain(&quote).expect("PCK chain");
        let c: dcap_qvl::QuoteCollateralV3 = serde_json::from_slice(
            &std::fs::read(format!("{dir}/tdx-collateral-00806f050000.json")).expect("file"),
        )
        .expect("collateral");
        Parts {
            qe: super::super::enclave_report(quote.qe_report()),
            pck: dcap_qvl::intel::parse_pck_extension(&chain[0]).expect("SGX extension"),
            td: *quote.report.as_td10().expect("TD 1.0"),
            info: serde_json::from_str(&c.tcb_info).expect("TCB info"),
            identity: serde_json::from_str(&c.qe_identity).expect("QE identity"),
        }
    }

    #[test]
    fn the_genuine_parts_stand_where_intel_says() {
        let p = parts();
        let qe = qe_status(&p.qe, &p.identity).expect("Intel's TD QE");
        assert_eq!(qe.status, TcbStatus::UpToDate);
        let platform = platform_status(&p.info, &p.pck, &p.td).expect("a TCB level");
        // Module 1.x at ISVSVN 2 is OutOfDate in TDX_01's levels (UpToDate needs 4).
        assert_eq!(platform.status, TcbStatus::OutOfDate);
    }

    #[test]
    fn another_quoting_enclave_is_refused_by_what_differs() {
        let p = parts();
        let mut other = p.qe;
        other.mr_signer[0] ^= 1;
        let e = qe_status(&other, &p.identity)
            .expect_err("MRSIGNER")
            .to_string();
        assert!(e.contains("MRSIGNER"), "{e}");
        let mut other = p.qe;
        other.isv_prod_id ^= 1;
        assert!(
            qe_status(&other, &p.identity)
                .expect_err("prod")
                .to_string()
                .contains("ISVPRODID")
        );
        let mut other = p.qe;
        other.attributes[0] |= SGX_ATTRIBUTE_DEBUG;
        let e = qe_status(&other, &p.identity)
            .expect_err("debug")
            .to_string();
        assert!(e.contains("ATTRIBUTES") || e.contains("debug"), "{e}");
        let mut other = p.qe;
        other.isv_svn = 0;
        let e = qe_status(&other, &p.identity)
            .expect_err("old QE")
            .to_string();
        assert!(e.contains("below every TCB level"), "{e}");
        let mut sgx = p.identity.clone();
        sgx.id = "QE".into();
        assert!(
            qe_status(&p.qe, &sgx)
                .expect_err("SGX QE identity")
                .to_string()
                .contains("TD_QE")
        );
    }

    #[test]
    fn a_platform_the_tcb_info_does_not_describe_is_refused() {
        let p = parts();
        let mut pck = p.pck.clone();
        pck.fmspc[0] ^= 1;
        assert!(
            platform_status(&p.info, &pck, &p.td)
                .expect_err("FMSPC")
                .to_string()
                .contains("FMSPC")
        );
        let mut pck = p.pck.clone();
        pck.pce_id = vec![1, 0];
        assert!(
            platform_status(&p.info, &pck, &p.td)
                .expect_err("PCE")
                .to_string()
                .contains("PCE")
        );
        let mut pck = p.pck.clone();
        pck.cpu_svn = [0; 16];
        let e = platform_status(&p.info, &pck, &p.td)
            .expect_err("old CPU")
            .to_string();
        assert!(e.contains("no TCB level"), "{e}");
        // A TDX module signed by someone else, or with other SEAM attributes.
        let mut td = p.td;
        td.mr_signer_seam[47] ^= 1;
        let e = platform_status(&p.info, &p.pck, &td)
            .expect_err("module signer")
            .to_string();
        assert!(e.contains("TDX module is signed by"), "{e}");
        let mut td = p.td;
        td.seam_attributes[0] = 1;
        let e = platform_status(&p.info, &p.pck, &td)
            .expect_err("SEAM attributes")
            .to_string();
        assert!(e.contains("SEAM attributes"), "{e}");
        // A module version the TCB info has no identity for, or below its levels.
        let mut td = p.td;
        td.tee_tcb_svn[1] = 9;
        assert!(
            platform_status(&p.info, &p.pck, &td)
                .expect_err("TDX_09")
                .to_string()
                .contains("TDX_09")
        );
        let mut td = p.td;
        td.tee_tcb_svn[0] = 1;
        let e = platform_status(&p.info, &p.pck, &td)
            .expect_err("module ISVSVN")
            .to_string();
        assert!(e.contains("below every level of TDX_01"), "{e}");
        // An SGX TCB info under a TDX quote.
        let mut sgx = p.info.clone();
        sgx.id = "SGX".into();
        assert!(
            platform_status(&sgx, &p.pck, &p.td)
                .expect_err("SGX")
                .to_string()
                .contains("TDX version 3")
        );
    }

    #[test]
    fn a_td_launched_on_an_out_of_date_tcb_since_updated_is_told_to_relaunch() {
        use TcbStatus::*;
        assert_eq!(relaunch_status(OutOfDate, UpToDate), TDRelaunchAdvised);
        assert_eq!(
            relaunch_status(OutOfDate, SWHardeningNeeded),
            TDRelaunchAdvised
        );
        assert_eq!(
            relaunch_status(OutOfDateConfigurationNeeded, UpToDate),
            TDRelaunchAdvisedConfigurationNeeded
        );
        assert_eq!(
            relaunch_status(OutOfDate, ConfigurationNeeded),
            TDRelaunchAdvisedConfigurationNeeded
        );
        // Still out of date now, or never was: the launch status stands.
        assert_eq!(relaunch_status(OutOfDate, OutOfDate), OutOfDate);
        assert_eq!(relaunch_status(UpToDate, UpToDate), UpToDate);
        assert_eq!(
            relaunch_status(SWHardeningNeeded, UpToDate),
            SWHardeningNeeded
        );
    }

    #[test]
    fn levels_are_taken_highest_first_whatever_the_json_order() {
        let p = parts();
        let mut reversed = p.info.clone();
        reversed.tcb_levels.reverse();
        assert_eq!(
            platform_status(&reversed, &p.pck, &p.td).expect("level"),
            platform_status(&p.info, &p.pck, &p.td).expect("level")
        );
        let mut identity = p.identity.clone();
        identity.tcb_levels.reverse();
        assert_eq!(
            qe_status(&p.qe, &identity).expect("QE"),
            qe_status(&p.qe, &p.identity).expect("QE")
        );
    }
}
