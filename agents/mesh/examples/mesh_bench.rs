//! Roster sync cost (ci/bench-mesh): what a node does with the join service's roster
//! when the cluster has N members. Figures only, no pass/fail.
//!
//! - a node's first sync: every peer checked and taken (`PeerTable::apply`), and a
//!   preshared key derived for each (what `wg0` is configured with);
//! - one more member joins: the whole roster checked again, one peer added;
//! - the mesh file the node keeps (JSON, with the secret) and its size.
//!
//!   cargo run --release -p veil-mesh --example mesh_bench -- [NODES] [ROUNDS]

use std::hint::black_box;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use veil_mesh::address::{Allocator, MeshPlan};
use veil_mesh::key::PrivateKey;
use veil_mesh::peers::{Peer, PeerTable, RosterView};
use veil_mesh::psk::MeshSecret;
use veil_mesh::state::MeshState;
use zeroize::Zeroizing;

fn roster(plan: MeshPlan, nodes: usize, version: u64) -> RosterView {
    let mut allocator = Allocator::new(plan);
    let peers = (0..nodes)
        .map(|i| {
            let mut seed = [7u8; 32];
            // Not the low byte: X25519 clears its low bits, and keys would repeat.
            seed[8..16].copy_from_slice(&(i as u64).to_le_bytes());
            let ip = allocator.allocate().expect("a /16 holds them");
            Peer {
                name: format!("node{i}"),
                public_key: PrivateKey::from_bytes(seed).public(),
                endpoint: SocketAddr::new(
                    Ipv4Addr::new(10, 76, (i / 250) as u8, (i % 250) as u8 + 1).into(),
                    veil_mesh::wg::LISTEN_PORT,
                ),
                mesh_ip: ip,
                pod_cidr: Some(
                    format!("10.244.{}.0/24", i % 256)
                        .parse()
                        .expect("a pod range"),
                ),
            }
        })
        .collect();
    RosterView { version, peers }
}

fn per_round(total: Duration, rounds: u32) -> String {
    let us = total.as_secs_f64() * 1e6 / f64::from(rounds);
    if us >= 1000.0 {
        format!("{:.2} ms", us / 1000.0)
    } else {
        format!("{us:.1} µs")
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let nodes: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(100);
    let rounds: u32 = args.next().and_then(|a| a.parse().ok()).unwrap_or(200);
    let plan = MeshPlan::new("10.90.0.0/16".parse().expect("net"), &[]).expect("plan");
    let full = roster(plan, nodes, 1);
    let grown = roster(plan, nodes + 1, 2);
    let own = full.peers[0].public_key;
    let secret = MeshSecret::new(Zeroizing::new([3u8; 32]));

    let started = Instant::now();
    for _ in 0..rounds {
        let mut table = PeerTable::new(own, plan);
        black_box(table.apply(full.clone()).expect("a valid roster"));
    }
    let first = started.elapsed();

    let started = Instant::now();
    for _ in 0..rounds {
        for peer in full.peers.iter().skip(1) {
            black_box(secret.pair_psk(&own, &peer.public_key).expect("a pair"));
        }
    }
    let psks = started.elapsed();

    // Tables that hold the full roster already; only the update is timed.
    let mut tables: Vec<PeerTable> = (0..rounds)
        .map(|_| {
            let mut table = PeerTable::new(own, plan);
            table.apply(full.clone()).expect("a valid roster");
            table
        })
        .collect();
    let mut added = 0;
    let started = Instant::now();
    for table in &mut tables {
        let changes = table.apply(grown.clone()).expect("a newer roster");
        added = black_box(changes).added.len();
    }
    let update = started.elapsed();

    let state = MeshState {
        plan,
        address: full.peers[0].mesh_ip,
        secret,
        roster: full.clone(),
    };
    let started = Instant::now();
    let mut bytes = 0;
    for _ in 0..rounds {
        bytes = black_box(state.to_json()).len();
    }
    let json = started.elapsed();

    println!("== roster sync with {nodes} members ({rounds} rounds each) ==");
    println!(
        "  first sync (check + take every peer):   {}",
        per_round(first, rounds)
    );
    println!(
        "  preshared keys for {} peers (HKDF):      {}",
        nodes - 1,
        per_round(psks, rounds)
    );
    println!(
        "  one more member joins (check all, {added} added): {}",
        per_round(update, rounds)
    );
    println!(
        "  the mesh file: {bytes} bytes of JSON, written in {}",
        per_round(json, rounds)
    );
}
