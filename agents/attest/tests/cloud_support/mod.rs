//! What the cloud test doubles share (attest's tests only: it needs tss-esapi).

/// Defines NV `index` (owner read and write, `data.len()` bytes) and writes `data` to
/// it: how the tests' cloud test doubles provision a vTPM's NV.
pub fn define_owner_nv(ctx: &mut tss_esapi::Context, index: u32, data: &[u8]) {
    use std::io::Write as _;
    use tss_esapi::abstraction::nv;
    use tss_esapi::attributes::NvIndexAttributes;
    use tss_esapi::handles::NvIndexTpmHandle;
    use tss_esapi::interface_types::algorithm::HashingAlgorithm;
    use tss_esapi::interface_types::resource_handles::NvAuth;
    use tss_esapi::structures::NvPublic;

    let attributes = NvIndexAttributes::builder()
        .with_owner_write(true)
        .with_owner_read(true)
        .build()
        .expect("attributes");
    let public = NvPublic::builder()
        .with_nv_index(NvIndexTpmHandle::new(index).expect("index"))
        .with_index_name_algorithm(HashingAlgorithm::Sha256)
        .with_index_attributes(attributes)
        .with_data_area_size(data.len())
        .build()
        .expect("NV public");
    ctx.execute_with_nullauth_session(|ctx| {
        let mut rw = nv::NvOpenOptions::NewIndex {
            nv_public: public,
            auth_handle: NvAuth::Owner,
        }
        .open(ctx)?;
        rw.write_all(data)
            .map_err(|_| tss_esapi::Error::WrapperError(tss_esapi::WrapperErrorKind::InternalError))
    })
    .unwrap_or_else(|e| panic!("write NV {index:#x}: {e}"));
}
