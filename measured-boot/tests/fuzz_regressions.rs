//! Inputs `ci/fuzz` found (tests/data/fuzz/, kept as they were found): each must end
//! in a clear error, not a panic or a gigabyte allocation.

use std::io::Cursor;

#[test]
fn an_esp_whose_directory_names_cluster_0_or_1_is_a_malformed_fat() {
    // Two inputs: a file's and a directory's first cluster below 2.
    let inputs: [(&str, &[u8]); 2] = [
        (
            "esp-cluster-underflow.bin",
            include_bytes!("data/fuzz/esp-cluster-underflow.bin"),
        ),
        (
            "esp-cluster-underflow-2.bin",
            include_bytes!("data/fuzz/esp-cluster-underflow-2.bin"),
        ),
    ];
    for (name, data) in inputs {
        let e = measured_boot::esp::read_file(
            name,
            Cursor::new(data),
            0,
            data.len() as u64,
            measured_boot::esp::DEFAULT_LOADER_PATH,
        )
        .expect_err("a malformed FAT");
        assert!(e.to_string().contains(name), "{e}");
    }
}

#[test]
fn a_section_claiming_2_gib_in_memory_is_refused_not_allocated() {
    let data = include_bytes!("data/fuzz/image-2gib-section.bin");
    let Err(e) = measured_boot::Image::from_reader(
        "image-2gib-section.bin",
        &mut Cursor::new(&data[..]),
        data.len() as u64,
    ) else {
        panic!("an implausible section was accepted")
    };
    assert!(e.to_string().contains("implausible VirtualSize"), "{e}");
}
