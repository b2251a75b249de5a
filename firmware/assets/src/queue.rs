//! Downloads in the order a device needs them.
//!
//! A release names its artifacts, the order they are applied in (the apps a
//! firmware needs before the firmware, unless the release says otherwise)
//! and how urgent it is. A [`Queue`] fetches one artifact at a time, each
//! from all its sources at once ([`download`]): an urgent job before every
//! normal one, jobs of the same urgency in the order they were pushed (a
//! release's in its order). An urgent job pushed while a normal one is
//! downloading pauses it ([`DownloadOptions::pause`]): the paused download's
//! verified blocks stay in its store, and it goes on from them once no
//! urgent job waits. Nothing is fetched twice.

use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};

use crate::download::{self, DownloadOptions, DownloadReport, Sources};
use crate::{AssetError, AssetId, BlockStore};

/// One artifact to fetch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    /// What the caller calls it (`RELEASE/ARTIFACT`).
    pub name: String,
    /// The asset: the artifact's piece root.
    pub id: AssetId,
    /// Fetched before every normal job, pausing one that is running.
    pub urgent: bool,
}

/// A job that ended.
#[derive(Debug)]
pub struct Finished {
    /// The job.
    pub job: Job,
    /// How often an urgent job paused it.
    pub paused: u32,
    /// What came from where, over all its runs (`resumed`: the blocks on
    /// the device before its first run), or why it failed.
    pub result: Result<DownloadReport, AssetError>,
}

#[derive(Debug, Default)]
struct State {
    urgent: VecDeque<Job>,
    normal: VecDeque<Job>,
    /// The running job's urgency and its pause switch.
    running: Option<(bool, Arc<AtomicBool>)>,
    closed: bool,
}

/// Artifacts waiting to be fetched, urgent ones first. [`Queue::run`]
/// fetches them; any thread may [`Queue::push`] more meanwhile.
#[derive(Debug, Default)]
pub struct Queue {
    state: Mutex<State>,
    wake: Condvar,
}

impl Queue {
    /// An empty queue.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Add jobs, in the order they are to be fetched. An urgent one pauses
    /// a normal job that is running.
    pub fn push(&self, jobs: impl IntoIterator<Item = Job>) {
        let mut s = self.lock();
        for job in jobs {
            if job.urgent {
                if let Some((false, pause)) = &s.running {
                    pause.store(true, Ordering::SeqCst);
                }
                s.urgent.push_back(job);
            } else {
                s.normal.push_back(job);
            }
        }
        drop(s);
        self.wake.notify_all();
    }

    /// No more jobs will come: [`Self::run`] returns once those there are
    /// have ended.
    pub fn close(&self) {
        self.lock().closed = true;
        self.wake.notify_all();
    }

    /// Whether no job is running or waiting.
    #[must_use]
    pub fn idle(&self) -> bool {
        let s = self.lock();
        s.running.is_none() && s.urgent.is_empty() && s.normal.is_empty()
    }

    /// The next job (urgent first) and its pause switch, once there is one;
    /// `None` when closed and empty.
    fn next(&self) -> Option<(Job, Arc<AtomicBool>)> {
        let mut s = self.lock();
        loop {
            let job = s.urgent.pop_front().or_else(|| s.normal.pop_front());
            if let Some(job) = job {
                let pause = Arc::new(AtomicBool::new(false));
                s.running = Some((job.urgent, Arc::clone(&pause)));
                return Some((job, pause));
            }
            if s.closed {
                return None;
            }
            s = self.wake.wait(s).unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// The running job was paused: it goes back to the front of its queue.
    fn requeue(&self, job: Job) {
        let mut s = self.lock();
        s.running = None;
        if job.urgent { s.urgent.push_front(job) } else { s.normal.push_front(job) }
    }

    fn ended(&self) {
        self.lock().running = None;
    }

    /// Fetch the jobs into stores under `root` from `sources`, one at a
    /// time, until the queue is closed and empty. `opened` gets each store
    /// when its first download begins (to share it with peers), `finished`
    /// each job as it ends.
    pub fn run(
        &self,
        root: &Path,
        sources: &Sources,
        options: &DownloadOptions,
        mut opened: impl FnMut(&Arc<Mutex<BlockStore>>),
        mut finished: impl FnMut(Finished),
    ) {
        let mut stores: HashMap<AssetId, (Arc<Mutex<BlockStore>>, Sources)> = HashMap::new();
        let mut partial: HashMap<String, (DownloadReport, u32)> = HashMap::new();
        while let Some((job, pause)) = self.next() {
            let (store, sources) = match stores.get(&job.id) {
                Some((store, sources)) => (Arc::clone(store), sources.clone()),
                None => match download::open_within(
                    root,
                    job.id,
                    sources,
                    &DownloadOptions { pause: Some(Arc::clone(&pause)), ..options.clone() },
                ) {
                    Ok((store, banned)) => {
                        let store = Arc::new(Mutex::new(store));
                        opened(&store);
                        let sources = sources.without(&banned);
                        let entry = partial.entry(job.name.clone()).or_default();
                        entry.0.banned.extend(banned);
                        stores.insert(job.id, (Arc::clone(&store), sources.clone()));
                        (store, sources)
                    }
                    // An urgent job came while the index had not: it goes first.
                    Err(_) if pause.load(Ordering::Relaxed) => {
                        self.requeue(job);
                        continue;
                    }
                    Err(e) => {
                        self.ended();
                        let paused = partial.remove(&job.name).map_or(0, |p| p.1);
                        finished(Finished { job, paused, result: Err(e) });
                        continue;
                    }
                },
            };
            let options = DownloadOptions { pause: Some(pause), ..options.clone() };
            let result = download::download(&store, &sources, &options);
            let (mut sum, paused) = partial.remove(&job.name).unwrap_or_default();
            match result {
                Ok(report) if report.paused => {
                    tracing::info!(job = %job.name, "paused for an urgent download");
                    add(&mut sum, report, paused == 0);
                    partial.insert(job.name.clone(), (sum, paused + 1));
                    self.requeue(job);
                }
                Ok(report) => {
                    self.ended();
                    add(&mut sum, report, paused == 0);
                    finished(Finished { job, paused, result: Ok(sum) });
                }
                Err(e) => {
                    self.ended();
                    finished(Finished { job, paused, result: Err(e) });
                }
            }
        }
    }
}

/// Add one run's report to a job's; `first`: the run's `resumed` is the job's.
fn add(sum: &mut DownloadReport, run: DownloadReport, first: bool) {
    if first {
        sum.resumed = run.resumed;
    }
    sum.from_origin += run.from_origin;
    for (peer, n) in run.from_peers {
        *sum.from_peers.entry(peer).or_default() += n;
    }
    sum.banned.extend(run.banned);
    sum.lost.extend(run.lost);
    sum.rolled_back.extend(run.rolled_back);
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn job(name: &str, urgent: bool) -> Job {
        Job { name: name.into(), id: AssetId([0; 32]), urgent }
    }

    #[test]
    fn urgent_jobs_go_first_and_pause_a_normal_one_that_runs() {
        let q = Queue::new();
        q.push([job("a/app", false), job("a/firmware", false)]);
        let (first, pause) = q.next().unwrap();
        assert_eq!(first.name, "a/app");
        assert!(!pause.load(Ordering::SeqCst));
        q.push([job("b/firmware", true)]);
        assert!(pause.load(Ordering::SeqCst), "an urgent job pauses the normal one running");
        q.requeue(first);
        let order: Vec<String> = std::iter::from_fn(|| {
            q.close();
            let (j, _) = q.next()?;
            q.ended();
            Some(j.name)
        })
        .collect();
        // The paused job goes on before the normal jobs that came after it.
        assert_eq!(order, ["b/firmware", "a/app", "a/firmware"]);
        assert!(q.idle());
    }

    #[test]
    fn an_urgent_job_does_not_pause_another_urgent_one() {
        let q = Queue::new();
        q.push([job("a/firmware", true)]);
        let (_, pause) = q.next().unwrap();
        q.push([job("b/firmware", true), job("c/app", false)]);
        assert!(!pause.load(Ordering::SeqCst));
        assert!(!q.idle());
    }

    #[test]
    fn a_paused_runs_report_adds_up_with_the_first_runs_resumed_blocks() {
        let mut sum = DownloadReport::default();
        let run = |resumed, origin| DownloadReport {
            resumed,
            from_origin: origin,
            from_peers: [("p:1".to_owned(), 2)].into(),
            ..DownloadReport::default()
        };
        add(&mut sum, run(5, 3), true);
        add(&mut sum, run(10, 4), false);
        assert_eq!((sum.resumed, sum.from_origin, sum.from_peers["p:1"]), (5, 7, 4));
    }
}
