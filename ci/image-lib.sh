# Helpers to read a Veil disk image without device-mapper or loop devices (the host
# kernel has neither): partition table with sfdisk, the ESP with mtools.
# shellcheck shell=bash

# Discoverable Partitions Specification type GUIDs (x86-64).
GUID_ESP=C12A7328-F81F-11D2-BA4B-00A0C93EC93B
GUID_ROOT=4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709
GUID_ROOT_VERITY=2C7357ED-EBD2-46D9-AEC1-23D437EC2BF5

# part_field IMAGE TYPE_GUID FIELD  -> start or size (in 512-byte sectors)
part_field() {
    sfdisk --json "$1" | jq -e -r --arg t "$2" --arg f "$3" \
        '[.partitiontable.partitions[] | select(.type == $t)][0][$f]' \
        || die "image '$1' has no partition of type $2"
}

# extract_partition IMAGE TYPE_GUID OUT
extract_partition() {
    local start size
    start=$(part_field "$1" "$2" start)
    size=$(part_field "$1" "$2" size)
    dd if="$1" of="$3" bs=512 skip="$start" count="$size" conv=sparse status=none
}

# extract_uki IMAGE OUT: EFI/BOOT/BOOTX64.EFI from the image's ESP.
extract_uki() {
    local start
    start=$(part_field "$1" "$GUID_ESP" start)
    MTOOLS_SKIP_CHECK=1 mcopy -n -i "$1@@$((start * 512))" ::EFI/BOOT/BOOTX64.EFI "$2" \
        || die "no EFI/BOOT/BOOTX64.EFI on the ESP of '$1'"
}

# replace_uki IMAGE UKI: write UKI as EFI/BOOT/BOOTX64.EFI on the ESP of IMAGE, in
# place (so give it a copy: the image's measurements change with its UKI).
replace_uki() {
    local start
    [ -f "$2" ] || die "replace_uki: no UKI at '$2'"
    start=$(part_field "$1" "$GUID_ESP" start) || exit 1   # part_field said why
    MTOOLS_SKIP_CHECK=1 mcopy -o -i "$1@@$((start * 512))" "$2" ::EFI/BOOT/BOOTX64.EFI \
        || die "could not write '$2' as EFI/BOOT/BOOTX64.EFI on the ESP of '$1'"
}

# uki_cmdline UKI: the .cmdline section, NULs stripped.
uki_cmdline() {
    objcopy -O binary --only-section=.cmdline "$1" /dev/stdout | tr -d '\0'
}

# uki_roothash UKI
uki_roothash() {
    uki_cmdline "$1" | tr ' ' '\n' | sed -n 's/^roothash=//p'
}
