//! A full disk, for real: the broker's data directory on a small tmpfs.
//! Publishing persistent messages until a write fails must nack that
//! publish and raise the disk alarm; once space is freed the broker takes
//! writes again without a restart, and after a restart every message that
//! was confirmed is there.
//!
//! Mounting needs root (as the gate runs); where `mount` is refused the
//! test says why and passes without checking anything.

#![allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use lapin::BasicProperties;
use lapin::options::{BasicGetOptions, BasicPublishOptions};
use lapin::types::FieldTable;
use warren_core::broker::Alarm;
use warren_server::resources::ByteSize;
use warren_tests::lapin_util::{confirming_channel, connect, declare_queue_with, within};
use warren_tests::start_durable_broker_with;

/// A tmpfs of `size` bytes, unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(size: u64) -> Result<Tmpfs, String> {
        let dir = std::env::temp_dir().join(format!("warren-full-disk-{}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}")])
            .arg("tmpfs")
            .arg(&dir)
            .output()
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            let _ = std::fs::remove_dir(&dir);
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        Ok(Tmpfs(dir))
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// Waits (bounded) until `f` holds.
async fn until(what: &str, limit: Duration, f: impl Fn() -> bool) {
    let deadline = Instant::now() + limit;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn publish(ch: &lapin::Channel, id: u32, body: &[u8]) -> bool {
    let confirm = within(
        "basic.publish",
        ch.basic_publish(
            "".into(),
            "full".into(),
            BasicPublishOptions::default(),
            body,
            BasicProperties::default()
                .with_delivery_mode(2)
                .with_message_id(id.to_string().into()),
        ),
    )
    .await
    .unwrap();
    within("the confirm", confirm).await.unwrap().is_ack()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_nacks_and_alarms_then_resumes_without_a_restart_and_loses_nothing_confirmed() {
    let fs = match Tmpfs::mount(40 << 20) {
        Ok(fs) => fs,
        Err(why) => {
            eprintln!("cannot mount a tmpfs ({why}): the full-disk test checks nothing here");
            return;
        }
    };
    let data = fs.path().join("data");
    let broker = start_durable_broker_with(|c| {
        c.data_dir = data.clone();
        // The free-space check would block publishers before any write
        // failed; this test is about the write that fails.
        c.limits.disk_free_limit = Some(ByteSize(0));
    })
    .await;
    // Space to give back later.
    let filler = fs.path().join("filler");
    std::fs::write(&filler, vec![1u8; 12 << 20]).unwrap();

    let conn = connect(&broker).await;
    let ch = confirming_channel(&conn).await;
    declare_queue_with(&ch, "full", true, FieldTable::default()).await;
    let body = vec![7u8; 64 << 10];
    let mut confirmed = Vec::new();
    let mut nacked = None;
    // 40 MiB cannot take 1,000 of them.
    for id in 0..1000u32 {
        if publish(&ch, id, &body).await {
            confirmed.push(id);
        } else {
            nacked = Some(id);
            break;
        }
    }
    let nacked = nacked.expect("a publish into a full disk was confirmed");
    assert!(confirmed.len() > 50, "only {} confirmed", confirmed.len());
    assert!(broker.broker.alarm_raised(Alarm::Disk));

    // Space comes back: the broker writes again, without a restart.
    std::fs::remove_file(&filler).unwrap();
    until("the disk alarm clears", Duration::from_secs(30), || {
        !broker.broker.alarm_raised(Alarm::Disk)
    })
    .await;
    for id in 5000..5003u32 {
        assert!(
            publish(&ch, id, &body).await,
            "publish {id} after space came back"
        );
        confirmed.push(id);
    }
    let _ = within("closing the connection", conn.close(200, "bye".into())).await;

    // Everything confirmed survives a restart (the nacked one may too:
    // its write was retried once space came back).
    let broker = broker.restart().await;
    let conn = connect(&broker).await;
    let ch = conn.create_channel().await.unwrap();
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..confirmed.len() + 10 {
        let got = within(
            "basic.get",
            ch.basic_get("full".into(), BasicGetOptions { no_ack: true }),
        )
        .await
        .unwrap();
        let Some(m) = got else { break };
        assert_eq!(m.delivery.data.len(), body.len());
        let id: u32 = m
            .delivery
            .properties
            .message_id()
            .as_ref()
            .unwrap()
            .as_str()
            .parse()
            .unwrap();
        seen.insert(id);
    }
    for id in &confirmed {
        assert!(
            seen.contains(id),
            "confirmed message {id} lost (nacked {nacked})"
        );
    }
    assert!(
        seen.iter()
            .all(|id| confirmed.contains(id) || *id == nacked)
    );
    let _ = within("closing the connection", conn.close(200, "bye".into())).await;
    broker.stop().await;
}
