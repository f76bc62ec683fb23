// amqplib against Warren. `node client.js promise|callback SCENARIO`.
//
// The scenarios are written once against the promise API's shape. In
// callback mode the connection and channels come from amqplib/callback_api
// and every call goes through an adapter that passes a node-style callback,
// so both of amqplib's public APIs are exercised with the same checks.
// Exit 0 is a pass, 3 means the scenario cannot be expressed, else a failure.
'use strict';

const crypto = require('node:crypto');
const assert = require('node:assert/strict');

const HOST = process.env.WARREN_HOST || '127.0.0.1';
const PORT = process.env.WARREN_PORT || '5672';
const USER = process.env.WARREN_USER || 'guest';
const PASSWORD = process.env.WARREN_PASSWORD || 'guest';
const EXIT_NA = 3;

const [mode, scenario] = process.argv.slice(2);

// Position of the callback argument of each callback_api method, so that a
// call written with fewer arguments still puts the callback in its place.
const CALLBACK_AT = {
  createChannel: 1, createConfirmChannel: 1, close: 0,
  assertQueue: 2, checkQueue: 1, deleteQueue: 2, purgeQueue: 1,
  bindQueue: 4, unbindQueue: 4, assertExchange: 3, checkExchange: 1,
  deleteExchange: 2, bindExchange: 4, unbindExchange: 4,
  consume: 3, cancel: 1, get: 2, prefetch: 2, recover: 0, waitForConfirms: 0,
};

function promisified(target) {
  return new Proxy(target, {
    get(obj, prop) {
      const value = obj[prop];
      if (typeof value !== 'function') return value;
      if (!(prop in CALLBACK_AT)) return value.bind(obj);
      return (...args) => new Promise((resolve, reject) => {
        const at = CALLBACK_AT[prop];
        const padded = args.slice(0, at);
        while (padded.length < at) padded.push(undefined);
        value.call(obj, ...padded, (err, ok) => {
          if (err) reject(err);
          else if (ok && (prop === 'createChannel' || prop === 'createConfirmChannel')) resolve(promisified(ok));
          else resolve(ok);
        });
      });
    },
  });
}

async function connect({ password = PASSWORD, heartbeat } = {}) {
  const url = `amqp://${USER}:${encodeURIComponent(password)}@${HOST}:${PORT}/%2F` +
    (heartbeat !== undefined ? `?heartbeat=${heartbeat}` : '');
  let conn;
  if (mode === 'callback') {
    const cbapi = require('amqplib/callback_api');
    conn = await new Promise((resolve, reject) =>
      cbapi.connect(url, {}, (err, c) => (err ? reject(err) : resolve(promisified(c)))));
  } else {
    conn = await require('amqplib').connect(url);
  }
  // An 'error' event without a listener would crash the process; the
  // scenarios observe errors through the rejected calls instead.
  conn.on('error', () => {});
  return conn;
}

async function channel(conn, confirm = false) {
  const ch = confirm ? await conn.createConfirmChannel() : await conn.createChannel();
  ch.on('error', () => {});
  return ch;
}

const name = (p) => `interop-node-${p}-${crypto.randomBytes(5).toString('hex')}`;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const sha = (b) => crypto.createHash('sha256').update(b).digest('hex');

class NotApplicable extends Error {}

async function until(cond, ms, what) {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(10);
  }
}

async function getOne(ch, q, ms = 5000) {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    const m = await ch.get(q, { noAck: true });
    if (m) return m;
    await sleep(20);
  }
  throw new Error(`no message on ${q}`);
}

async function drain(ch, q) {
  const out = [];
  for (let i = 0; i < 1000; i++) {
    const m = await ch.get(q, { noAck: true });
    if (!m) return out;
    out.push(m);
  }
  throw new Error('queue did not drain');
}

async function expectClose(promise, code) {
  try {
    await promise;
  } catch (e) {
    assert.equal(e.code, code, `reply code (${e.message})`);
    return e.message;
  }
  throw new Error(`expected channel.close ${code}`);
}

const fib = (n) => { let [a, b] = [0, 1]; for (let i = 0; i < n; i++) [a, b] = [b, a + b]; return a; };

const TOPIC_BINDINGS = { q1: ['*.orange.*'], q2: ['*.*.rabbit', 'lazy.#'] };
const TOPIC_KEYS = ['quick.orange.rabbit', 'lazy.orange.elephant', 'quick.orange.fox',
  'lazy.brown.fox', 'lazy.pink.rabbit', 'quick.brown.fox', 'orange',
  'quick.orange.new.rabbit', 'lazy.orange.new.rabbit', 'lazy'];
const TOPIC_EXPECTED = {
  q1: ['quick.orange.rabbit', 'lazy.orange.elephant', 'quick.orange.fox'],
  q2: ['quick.orange.rabbit', 'lazy.orange.elephant', 'lazy.brown.fox',
    'lazy.pink.rabbit', 'lazy.orange.new.rabbit', 'lazy'],
};

async function boundQueue(conn, ex, keys) {
  const ch = await channel(conn);
  const { queue } = await ch.assertQueue('', { exclusive: true });
  assert.ok(queue.startsWith('amq.gen-'), `server-named queue ${queue}`);
  for (const k of keys) await ch.bindQueue(queue, ex, k, {});
  return { ch, queue };
}

// Records the 'error' events a connection emits (a write EPIPE, say).
function watchErrors(conn) {
  const errors = [];
  conn.on('error', (e) => errors.push(String(e)));
  return errors;
}

async function within(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} did not complete within ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

// Closes conn: the close callback (or promise) must complete, without an
// error, and the connection must not have emitted one on the way.
async function closeClean(conn, errors) {
  try {
    await within(conn.close(), 5000, 'connection close');
  } catch (e) {
    throw new Error(`${e.message} (errors emitted: ${JSON.stringify(errors)})`);
  }
  await new Promise(setImmediate); // let pending socket events arrive
  assert.deepEqual(errors, [], 'errors emitted by the connection');
}

// Deletes q on a new connection. (The other clients also count what it
// held; amqplib's close overtakes publishes still in its channel buffers, so
// RabbitMQ 3.10 holds none of them either.)
async function deleteQueue(q) {
  const conn = await connect();
  await (await channel(conn)).deleteQueue(q, {});
  await conn.close();
}

async function iterate(n, fn) {
  for (let i = 0; i < n; i++) {
    try {
      await fn();
    } catch (e) {
      throw new Error(`iteration ${i}: ${e.message}`);
    }
  }
}

// One publish with CC and BCC headers; keys route to queues a, b and c
// (on the default exchange, keys is null and the queue names are used).
async function ccBccRound(ch, ex, keys) {
  const qs = [];
  for (const x of 'abc') qs.push((await ch.assertQueue(name(`cc-${x}`), { exclusive: true })).queue);
  keys = keys || qs;
  if (ex) for (let i = 0; i < 3; i++) await ch.bindQueue(qs[i], ex, keys[i], {});
  ch.publish(ex, keys[0], Buffer.from('cc and bcc'), { headers: { CC: [keys[1]], BCC: [keys[2]], 'x-other': 'kept' } });
  // Each queue gets one copy, with the publish's routing key, and BCC gone.
  const got = [];
  const want = [];
  for (let i = 0; i < 3; i++) {
    let seen;
    try {
      const m = await getOne(ch, qs[i], 2000);
      const secondCopy = (await ch.get(qs[i], { noAck: true })) !== false;
      seen = { key: m.fields.routingKey, body: m.content.toString(), headers: m.properties.headers, secondCopy };
    } catch (e) {
      seen = e.message;
    }
    got.push(seen);
    want.push({ key: keys[0], body: 'cc and bcc', headers: { CC: [keys[1]], 'x-other': 'kept' }, secondCopy: false });
  }
  assert.deepEqual(got, want, 'deliveries');
}

const scenarios = {
  async hello() {
    const conn = await connect();
    const ch = await channel(conn);
    const q = name('hello');
    await ch.assertQueue(q, { durable: false });
    ch.sendToQueue(q, Buffer.from('Hello World!'));
    const got = await new Promise((resolve) => ch.consume(q, resolve, { noAck: true }));
    assert.equal(got.content.toString(), 'Hello World!');
    await ch.deleteQueue(q, {});
    await conn.close();
  },

  async work_queues() {
    const conn = await connect();
    const pub = await channel(conn);
    const q = name('tasks');
    await pub.assertQueue(q, { durable: true });
    const workers = [];
    for (let i = 0; i < 2; i++) {
      const wconn = await connect();
      const ch = await channel(wconn);
      await ch.prefetch(1, false);
      const w = { conn: wconn, ch, unacked: 0, maxUnacked: 0, done: 0 };
      await ch.consume(q, (msg) => {
        if (msg === null) return; // cancelled by the server when the queue goes
        w.unacked++;
        w.maxUnacked = Math.max(w.maxUnacked, w.unacked);
        // Hold each task a moment, as a worker would, then ack.
        setTimeout(() => { w.unacked--; w.done++; ch.ack(msg); }, 5);
      }, { noAck: false });
      workers.push(w);
    }
    const n = 20;
    for (let i = 0; i < n; i++) pub.sendToQueue(q, Buffer.from(`task ${i}`), { persistent: true });
    await until(() => workers[0].done + workers[1].done === n, 15000, 'all tasks');
    for (const w of workers) {
      assert.ok(w.maxUnacked <= 1, `worker had ${w.maxUnacked} unacked with prefetch 1`);
      assert.ok(w.done > 0, `fair dispatch: a worker got no work (${workers.map((x) => x.done)})`);
    }
    await pub.deleteQueue(q, {});
    for (const w of workers) await w.conn.close();
    await conn.close();
  },

  async pubsub() {
    const conn = await connect();
    const pub = await channel(conn, true);
    const ex = name('logs');
    await pub.assertExchange(ex, 'fanout', { durable: false });
    const subs = [];
    for (let i = 0; i < 2; i++) subs.push(await boundQueue(await connect(), ex, ['']));
    pub.publish(ex, '', Buffer.from('log line'));
    await pub.waitForConfirms();
    for (const s of subs) {
      assert.equal((await getOne(s.ch, s.queue)).content.toString(), 'log line');
      await s.ch.connection.close();
    }
    await pub.deleteExchange(ex, {});
    await conn.close();
  },

  async routing() {
    const conn = await connect();
    const pub = await channel(conn, true);
    const ex = name('direct_logs');
    await pub.assertExchange(ex, 'direct', { durable: false });
    const a = await boundQueue(conn, ex, ['error']);
    const b = await boundQueue(conn, ex, ['info', 'warning', 'error']);
    for (const sev of ['info', 'warning', 'error']) pub.publish(ex, sev, Buffer.from(sev));
    await pub.waitForConfirms();
    assert.deepEqual((await drain(a.ch, a.queue)).map((m) => m.content.toString()), ['error']);
    assert.deepEqual((await drain(b.ch, b.queue)).map((m) => m.content.toString()), ['info', 'warning', 'error']);
    await pub.deleteExchange(ex, {});
    await conn.close();
  },

  async topics() {
    const conn = await connect();
    const pub = await channel(conn, true);
    const ex = name('topic_logs');
    await pub.assertExchange(ex, 'topic', { durable: false });
    const qs = {};
    for (const [k, pats] of Object.entries(TOPIC_BINDINGS)) qs[k] = await boundQueue(conn, ex, pats);
    for (const key of TOPIC_KEYS) pub.publish(ex, key, Buffer.from(key));
    await pub.waitForConfirms();
    for (const [k, { ch, queue }] of Object.entries(qs)) {
      assert.deepEqual((await drain(ch, queue)).map((m) => m.fields.routingKey), TOPIC_EXPECTED[k], k);
    }
    await pub.deleteExchange(ex, {});
    await conn.close();
  },

  async rpc() {
    const server = await connect();
    const sch = await channel(server);
    const rpcQueue = name('rpc_queue');
    await sch.assertQueue(rpcQueue, { autoDelete: true });
    await sch.prefetch(1, false);
    await sch.consume(rpcQueue, (msg) => {
      const n = parseInt(msg.content.toString(), 10);
      sch.sendToQueue(msg.properties.replyTo, Buffer.from(String(fib(n))),
        { correlationId: msg.properties.correlationId });
      sch.ack(msg);
    }, { noAck: false });

    const client = await connect();
    const cch = await channel(client);
    const { queue: replyQueue } = await cch.assertQueue('', { exclusive: true });
    const replies = new Map();
    await cch.consume(replyQueue, (msg) => replies.set(msg.properties.correlationId, msg.content.toString()), { noAck: true });
    for (const n of [1, 10, 30]) {
      const corr = `corr-${n}`;
      cch.sendToQueue(rpcQueue, Buffer.from(String(n)), { replyTo: replyQueue, correlationId: corr });
      await until(() => replies.has(corr), 5000, `reply ${corr}`);
      assert.equal(replies.get(corr), String(fib(n)));
    }
    await client.close();
    await server.close();
  },

  async confirms_individual() {
    const conn = await connect();
    const ch = await channel(conn, true);
    const q = name('confirms');
    await ch.assertQueue(q, { exclusive: true });
    for (let i = 0; i < 100; i++) {
      ch.sendToQueue(q, Buffer.from(String(i)));
      await ch.waitForConfirms();
    }
    assert.equal((await ch.checkQueue(q)).messageCount, 100);
    await conn.close();
  },

  async confirms_batch() {
    const conn = await connect();
    const ch = await channel(conn, true);
    const q = name('confirms');
    await ch.assertQueue(q, { exclusive: true });
    for (let batch = 0; batch < 10; batch++) {
      for (let i = 0; i < 10; i++) ch.sendToQueue(q, Buffer.from(String(i)));
      await ch.waitForConfirms();
    }
    assert.equal((await ch.checkQueue(q)).messageCount, 100);
    await conn.close();
  },

  async confirms_async() {
    const conn = await connect();
    const ch = await channel(conn, true);
    const q = name('confirms');
    await ch.assertQueue(q, { exclusive: true });
    let acked = 0; let nacked = 0;
    for (let i = 0; i < 100; i++) {
      ch.sendToQueue(q, Buffer.from(String(i)), {}, (err) => (err ? nacked++ : acked++));
    }
    await until(() => acked + nacked === 100, 10000, 'confirms');
    assert.equal(nacked, 0);
    await conn.close();
  },

  async mandatory_return() {
    const conn = await connect();
    const ch = await channel(conn);
    const returned = [];
    ch.on('return', (msg) => returned.push(msg));
    ch.publish('', name('nowhere'), Buffer.from('lost'), { mandatory: true });
    await until(() => returned.length > 0, 5000, 'basic.return');
    const f = returned[0].fields;
    assert.deepEqual([f.replyCode, f.replyText, returned[0].content.toString()], [312, 'NO_ROUTE', 'lost']);
    await conn.close();
  },

  async nack_requeue() {
    const conn = await connect();
    const ch = await channel(conn);
    const q = name('nack');
    await ch.assertQueue(q, { exclusive: true });
    ch.sendToQueue(q, Buffer.from('again'));
    const seen = [];
    await ch.consume(q, (msg) => {
      seen.push([msg.fields.redelivered, msg.content.toString()]);
      if (seen.length === 1) ch.nack(msg, false, true);
      else ch.ack(msg);
    }, { noAck: false });
    await until(() => seen.length >= 2, 5000, 'redelivery');
    assert.deepEqual(seen, [[false, 'again'], [true, 'again']]);
    await conn.close();
  },

  async prefetch_limit() {
    const conn = await connect();
    const ch = await channel(conn, true);
    const q = name('prefetch');
    await ch.assertQueue(q, { exclusive: true });
    const total = 30; const limit = 5;
    for (let i = 0; i < total; i++) ch.sendToQueue(q, Buffer.from(String(i)));
    await ch.waitForConfirms();
    await ch.prefetch(limit, false);
    let unacked = [];
    let done = 0;
    await ch.consume(q, (msg) => unacked.push(msg), { noAck: false });
    const end = Date.now() + 15000;
    while (done < total && Date.now() < end) {
      // Let the broker push as much as it will before acking anything.
      await sleep(100);
      assert.ok(unacked.length <= limit, `${unacked.length} unacked with prefetch ${limit}`);
      if (unacked.length) {
        assert.ok(unacked.length === limit || done + unacked.length === total,
          `only ${unacked.length} delivered while more are ready`);
        ch.ack(unacked[unacked.length - 1], true);
        done += unacked.length;
        unacked = [];
      }
    }
    assert.equal(done, total);
    await conn.close();
  },

  async exclusive_locked() {
    const a = await connect();
    const q = name('exclusive');
    await (await channel(a)).assertQueue(q, { exclusive: true });
    const b = await connect();
    const text = await expectClose((await channel(b)).assertQueue(q, {}), 405);
    assert.match(text, /RESOURCE_LOCKED - /);
    await expectClose((await channel(b)).consume(q, () => {}, {}), 405);
    await b.close();
    await a.close();
  },

  async passive_404() {
    const conn = await connect();
    const q = name('missing');
    const text = await expectClose((await channel(conn)).checkQueue(q), 404);
    assert.ok(text.includes(`NOT_FOUND - no queue '${q}' in vhost '/'`), text);
    const ch = await channel(conn);
    await ch.assertQueue(q, { exclusive: true });
    ch.sendToQueue(q, Buffer.from('still working'));
    assert.equal((await getOne(ch, q)).content.toString(), 'still working');
    await conn.close();
  },

  async redeclare_406() {
    const conn = await connect();
    const q = name('redeclare');
    await (await channel(conn)).assertQueue(q, { durable: false });
    const text = await expectClose((await channel(conn)).assertQueue(q, { durable: true }), 406);
    const want = `PRECONDITION_FAILED - inequivalent arg 'durable' for queue '${q}' in vhost '/': received 'true' but current is 'false'`;
    assert.ok(text.includes(`"${want}"`), text);
    await (await channel(conn)).deleteQueue(q, {});
    await conn.close();
  },

  async wrong_password() {
    try {
      await connect({ password: 'wrong-password' });
    } catch (e) {
      assert.match(e.message, /403|ACCESS_REFUSED/, e.message);
      return;
    }
    throw new Error('login with a wrong password succeeded');
  },

  async large_message() {
    const conn = await connect();
    const ch = await channel(conn);
    const q = name('large');
    await ch.assertQueue(q, { exclusive: true });
    const body = crypto.randomBytes(8 * 1024 * 1024);
    ch.sendToQueue(q, body);
    const got = await getOne(ch, q, 20000);
    assert.equal(got.content.length, body.length);
    assert.equal(sha(got.content), sha(body));
    await conn.close();
  },

  async many_channels() {
    const conn = await connect();
    const q = name('channels');
    const chans = [];
    for (let i = 0; i < 100; i++) chans.push(await channel(conn, true));
    await chans[0].assertQueue(q, { exclusive: true });
    chans.forEach((c, i) => c.sendToQueue(q, Buffer.from(String(i))));
    await Promise.all(chans.map((c) => c.waitForConfirms()));
    const bodies = (await drain(chans[99], q)).map((m) => parseInt(m.content.toString(), 10)).sort((x, y) => x - y);
    assert.deepEqual(bodies, [...Array(100).keys()]);
    for (const c of chans) await c.close();
    await conn.close();
  },

  async heartbeat() {
    const conn = await connect({ heartbeat: 2 });
    const ch = await channel(conn);
    const q = name('heartbeat');
    await ch.assertQueue(q, { exclusive: true });
    let closed = null;
    conn.on('close', (e) => { closed = e || 'closed'; });
    await sleep(10000);
    assert.equal(closed, null, `connection closed while idle: ${closed}`);
    ch.sendToQueue(q, Buffer.from('alive'));
    assert.equal((await getOne(ch, q)).content.toString(), 'alive');
    await conn.close();
  },

  async server_cancel() {
    const a = await connect();
    const ch = await channel(a);
    const q = name('cancel');
    await ch.assertQueue(q, { durable: false });
    let cancelled = false;
    // amqplib calls the consumer with null when the server cancels it.
    await ch.consume(q, (msg) => { if (msg === null) cancelled = true; }, {});
    const b = await connect();
    await (await channel(b)).deleteQueue(q, {});
    await b.close();
    await until(() => cancelled, 5000, 'server-sent basic.cancel');
    await a.close();
  },

  async close_clean() {
    // RabbitMQ's "hello world" sender, 50 times: every close must succeed.
    const q = name('close');
    await iterate(50, async () => {
      const conn = await connect();
      const errors = watchErrors(conn);
      const ch = await channel(conn);
      await ch.assertQueue(q, { durable: false });
      ch.sendToQueue(q, Buffer.from('Hello World!'));
      await closeClean(conn, errors);
    });
    await deleteQueue(q);
  },

  async close_after_burst() {
    // Publish until amqplib says its buffer is full, then close at once.
    const conn = await connect();
    const errors = watchErrors(conn);
    const ch = await channel(conn);
    const q = name('burst');
    await ch.assertQueue(q, { durable: false });
    let n = 0;
    for (;;) {
      const more = ch.sendToQueue(q, Buffer.from(`burst ${n}`));
      n++;
      if (!more || n >= 100000) break;
    }
    await closeClean(conn, errors);
    await deleteQueue(q);
  },

  async cc_bcc() {
    const conn = await connect();
    const ch = await channel(conn);
    await ccBccRound(ch, '', null);
    const ex = name('cc');
    await ch.assertExchange(ex, 'direct', { durable: false });
    await ccBccRound(ch, ex, ['key-a', 'key-b', 'key-c']);
    await ch.deleteExchange(ex, {});
    await conn.close();
  },

  async channel_close_race() {
    // The broker's channel.close (404, no exchange) and ours cross on the
    // wire; then another channel must work and the connection close cleanly.
    // That channel is opened first, as a client that reuses the freed number
    // at once could take the broker's late close-ok for the old channel as
    // the reply to the new channel.open.
    await iterate(20, async () => {
      const conn = await connect();
      const errors = watchErrors(conn);
      const ch2 = await channel(conn);
      const ch = await channel(conn);
      ch.publish(name('missing'), 'key', Buffer.from('lost'));
      try {
        await within(ch.close(), 5000, 'channel close');
      } catch (e) {
        assert.equal(e.code, 404, `channel close: ${e.message}`);
      }
      try {
        const { queue } = await ch2.assertQueue('', { exclusive: true });
        ch2.sendToQueue(queue, Buffer.from('after the race'));
        assert.equal((await getOne(ch2, queue)).content.toString(), 'after the race');
      } catch (e) {
        throw new Error(`second channel: ${e.message} (errors emitted: ${JSON.stringify(errors)})`);
      }
      await closeClean(conn, errors);
    });
  },
};

async function main() {
  if (!['promise', 'callback'].includes(mode) || !scenario) {
    console.error('usage: node client.js promise|callback SCENARIO');
    return 2;
  }
  const fn = scenarios[scenario];
  if (!fn) {
    console.log('n/a: no such scenario for this client');
    return EXIT_NA;
  }
  try {
    await fn();
    return 0;
  } catch (e) {
    if (e instanceof NotApplicable) {
      console.log(`n/a: ${e.message}`);
      return EXIT_NA;
    }
    console.error(e);
    return 1;
  }
}

main().then((code) => process.exit(code));
