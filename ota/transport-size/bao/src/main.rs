//! The baseline and bao-tree: a file's BLAKE3 outboard (16 KiB groups), a
//! range of it encoded with its proof, and decoded and verified against the
//! root hash alone, as a device would take pieces from a peer over the
//! existing TLS link.
#[path = "../../base/src/tls.rs"]
mod tls;

use bao_tree::io::outboard::PreOrderMemOutboard;
use bao_tree::io::round_up_to_chunks;
use bao_tree::io::sync::{decode_ranges, encode_ranges_validated};
use bao_tree::{BlockSize, ByteRanges};

const BLOCK: BlockSize = BlockSize::from_chunk_log(4);

#[tokio::main]
async fn main() -> Result<(), tls::Error> {
    tls::dispatch("bao roundtrip FILE START END", own).await
}

/// `roundtrip FILE START END`: encode the range, decode it against the root.
async fn own(args: &[String]) -> Result<bool, tls::Error> {
    let [cmd, file, start, end] = args else { return Ok(false) };
    if cmd != "roundtrip" {
        return Ok(false);
    }
    let data = std::fs::read(file)?;
    let ob = PreOrderMemOutboard::create(&data, BLOCK);
    let ranges = round_up_to_chunks(&ByteRanges::from(start.parse::<u64>()?..end.parse::<u64>()?));
    let mut wire = Vec::new();
    encode_ranges_validated(&data[..], &ob, &ranges, &mut wire)?;
    let mut target = Vec::new();
    let mut received = PreOrderMemOutboard { root: ob.root, tree: ob.tree, data: vec![0; ob.data.len()] };
    decode_ranges(std::io::Cursor::new(&wire), &ranges, &mut target, &mut received)?;
    println!("root {} wire {} bytes", ob.root, wire.len());
    Ok(true)
}
