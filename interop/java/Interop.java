// The RabbitMQ Java client (Debian's librabbitmq-client-java) against Warren.
//
// Usage: java Interop SCENARIO. Exit 0 is a pass, 3 means the scenario cannot
// be expressed with this client, anything else is a failure.

import com.rabbitmq.client.*;

import java.io.FileInputStream;
import java.io.IOException;
import java.io.InputStream;
import java.net.HttpURLConnection;
import java.net.URL;
import java.security.KeyStore;
import java.security.cert.CertificateFactory;
import javax.net.ssl.KeyManagerFactory;
import javax.net.ssl.SSLContext;
import javax.net.ssl.SSLParameters;
import javax.net.ssl.SSLSocket;
import javax.net.ssl.TrustManagerFactory;
import java.nio.charset.StandardCharsets;
import java.security.MessageDigest;
import java.security.SecureRandom;
import java.util.*;
import java.util.concurrent.*;
import java.util.concurrent.atomic.AtomicInteger;

public class Interop {
    static final String HOST = env("WARREN_HOST", "127.0.0.1");
    static final int PORT = Integer.parseInt(env("WARREN_PORT", "5672"));
    static final String USER = env("WARREN_USER", "guest");
    static final String PASSWORD = env("WARREN_PASSWORD", "guest");
    static final SecureRandom RANDOM = new SecureRandom();

    static String env(String k, String def) {
        String v = System.getenv(k);
        return v == null || v.isEmpty() ? def : v;
    }

    interface Scenario { void run() throws Exception; }
    interface Action { void run() throws Exception; }

    static Connection connect(String password, int heartbeat) throws Exception {
        ConnectionFactory f = new ConnectionFactory();
        f.setHost(HOST);
        f.setPort(PORT);
        f.setUsername(USER);
        f.setPassword(password);
        f.setRequestedHeartbeat(heartbeat);
        // Recovery would hide a dropped connection from the scenarios.
        f.setAutomaticRecoveryEnabled(false);
        f.setTopologyRecoveryEnabled(false);
        return f.newConnection();
    }

    static Connection connect() throws Exception { return connect(PASSWORD, 10); }

    // AMQPS: run.sh makes the CA, the server certificate (localhost) and a
    // client certificate (PKCS#12) with openssl.
    static final int TLS_PORT = Integer.parseInt(env("WARREN_TLS_PORT", "5671"));
    static final String TLS_CLIENT_USER = env("WARREN_TLS_CLIENT_USER", "tls-client");

    static SSLContext tlsContext(boolean clientCert) throws Exception {
        KeyStore trust = KeyStore.getInstance(KeyStore.getDefaultType());
        trust.load(null, null);
        try (InputStream in = new FileInputStream(env("WARREN_TLS_CA", ""))) {
            trust.setCertificateEntry("ca", CertificateFactory.getInstance("X.509").generateCertificate(in));
        }
        TrustManagerFactory tmf = TrustManagerFactory.getInstance(TrustManagerFactory.getDefaultAlgorithm());
        tmf.init(trust);
        KeyManagerFactory kmf = null;
        if (clientCert) {
            KeyStore keys = KeyStore.getInstance("PKCS12");
            char[] pw = env("WARREN_TLS_CLIENT_P12_PASSWORD", "").toCharArray();
            try (InputStream in = new FileInputStream(env("WARREN_TLS_CLIENT_P12", ""))) {
                keys.load(in, pw);
            }
            kmf = KeyManagerFactory.getInstance(KeyManagerFactory.getDefaultAlgorithm());
            kmf.init(keys, pw);
        }
        SSLContext ctx = SSLContext.getInstance("TLS");
        ctx.init(kmf == null ? null : kmf.getKeyManagers(), tmf.getTrustManagers(), null);
        return ctx;
    }

    static Connection tlsConnect(boolean clientCert) throws Exception {
        ConnectionFactory f = new ConnectionFactory();
        f.setHost("localhost");
        f.setPort(TLS_PORT);
        f.useSslProtocol(tlsContext(clientCert));
        // The client in Debian (5.0) predates enableHostnameVerification():
        // ask the JDK to check the certificate's name (localhost) itself.
        f.setSocketConfigurator(socket -> {
            socket.setTcpNoDelay(true);
            if (socket instanceof SSLSocket) {
                SSLSocket ssl = (SSLSocket) socket;
                SSLParameters params = ssl.getSSLParameters();
                params.setEndpointIdentificationAlgorithm("HTTPS");
                ssl.setSSLParameters(params);
            }
        });
        if (clientCert) {
            f.setSaslConfig(DefaultSaslConfig.EXTERNAL);
        } else {
            f.setUsername(USER);
            f.setPassword(PASSWORD);
        }
        f.setAutomaticRecoveryEnabled(false);
        f.setTopologyRecoveryEnabled(false);
        return f.newConnection();
    }

    /** The management API's connection list, as text. */
    static String apiConnections() throws Exception {
        URL url = new URL(env("WARREN_HTTP_URL", "http://127.0.0.1:15672") + "/api/connections");
        HttpURLConnection c = (HttpURLConnection) url.openConnection();
        c.setConnectTimeout(10000);
        c.setReadTimeout(10000);
        String token = Base64.getEncoder().encodeToString(utf8(USER + ":" + PASSWORD));
        c.setRequestProperty("Authorization", "Basic " + token);
        checkEq(c.getResponseCode(), 200, "GET /api/connections");
        try (InputStream in = c.getInputStream()) {
            return str(in.readAllBytes());
        }
    }

    static void tlsRoundTrip(Connection conn, String user, String mechanism) throws Exception {
        Channel ch = conn.createChannel();
        String q = ch.queueDeclare("", false, true, true, null).getQueue();
        ch.confirmSelect();
        ch.basicPublish("", q, null, utf8("over TLS as " + user));
        ch.waitForConfirmsOrDie(5000);
        GetResponse r = null;
        for (int i = 0; i < 250 && r == null; i++) {
            r = ch.basicGet(q, true);
            if (r == null) Thread.sleep(20);
        }
        check(r != null, "message over TLS");
        checkEq(str(r.getBody()), "over TLS as " + user, "body over TLS");
        String listed = apiConnections();
        check(listed.contains("\"ssl\":true"), "a TLS connection is listed: " + listed);
        check(listed.contains("\"user\":\"" + user + "\""), "listed as " + user + ": " + listed);
        check(listed.contains("\"auth_mechanism\":\"" + mechanism + "\""), "listed with " + mechanism + ": " + listed);
        ch.close();
        conn.close();
        check(!conn.isOpen(), "connection closed");
    }

    static String name(String p) {
        return "interop-java-" + p + "-" + Long.toHexString(RANDOM.nextLong() & 0xffffffffffL);
    }

    static byte[] utf8(String s) { return s.getBytes(StandardCharsets.UTF_8); }
    static String str(byte[] b) { return new String(b, StandardCharsets.UTF_8); }

    static void check(boolean cond, String what) {
        if (!cond) throw new AssertionError(what);
    }

    static void checkEq(Object got, Object want, String what) {
        if (!Objects.equals(got, want)) throw new AssertionError(what + ": got " + got + ", want " + want);
    }

    static GetResponse getOne(Channel ch, String q, long millis) throws Exception {
        long end = System.currentTimeMillis() + millis;
        while (System.currentTimeMillis() < end) {
            GetResponse r = ch.basicGet(q, true);
            if (r != null) return r;
            Thread.sleep(20);
        }
        throw new AssertionError("no message on " + q);
    }

    static List<GetResponse> drain(Channel ch, String q) throws Exception {
        List<GetResponse> out = new ArrayList<>();
        for (int i = 0; i < 1000; i++) {
            GetResponse r = ch.basicGet(q, true);
            if (r == null) return out;
            out.add(r);
        }
        throw new AssertionError("queue did not drain");
    }

    /** Runs an action that must end in channel.close with this code; returns the text. */
    static String expectClose(Action a, int code) throws Exception {
        try {
            a.run();
        } catch (IOException e) {
            Throwable c = e.getCause();
            check(c instanceof ShutdownSignalException, "expected a channel close, got " + e);
            Method reason = ((ShutdownSignalException) c).getReason();
            check(reason instanceof AMQP.Channel.Close, "expected channel.close, got " + reason);
            AMQP.Channel.Close close = (AMQP.Channel.Close) reason;
            checkEq(close.getReplyCode(), code, "reply code (" + close.getReplyText() + ")");
            return close.getReplyText();
        }
        throw new AssertionError("expected channel.close " + code);
    }

    static void until(java.util.function.BooleanSupplier cond, long millis, String what) throws Exception {
        long end = System.currentTimeMillis() + millis;
        while (!cond.getAsBoolean()) {
            if (System.currentTimeMillis() > end) throw new AssertionError("timed out waiting for " + what);
            Thread.sleep(10);
        }
    }

    static long fib(int n) {
        long a = 0, b = 1;
        for (int i = 0; i < n; i++) { long t = a + b; a = b; b = t; }
        return a;
    }

    static String boundQueue(Channel ch, String ex, String... keys) throws Exception {
        String q = ch.queueDeclare("", false, true, false, null).getQueue();
        check(q.startsWith("amq.gen-"), "server-named queue " + q);
        for (String k : keys) ch.queueBind(q, ex, k);
        return q;
    }

    static String sha(byte[] b) throws Exception {
        return HexFormat.of().formatHex(MessageDigest.getInstance("SHA-256").digest(b));
    }

    static final Map<String, Scenario> SCENARIOS = new LinkedHashMap<>();

    static {
        SCENARIOS.put("tls_hello", () -> tlsRoundTrip(tlsConnect(false), USER, "PLAIN"));
        SCENARIOS.put("tls_external", () -> tlsRoundTrip(tlsConnect(true), TLS_CLIENT_USER, "EXTERNAL"));
        SCENARIOS.put("hello", () -> {
            try (Connection conn = connect()) {
                Channel ch = conn.createChannel();
                String q = name("hello");
                ch.queueDeclare(q, false, false, false, null);
                ch.basicPublish("", q, null, utf8("Hello World!"));
                BlockingQueue<String> got = new LinkedBlockingQueue<>();
                ch.basicConsume(q, true, (tag, d) -> got.add(str(d.getBody())), tag -> {});
                checkEq(got.poll(5, TimeUnit.SECONDS), "Hello World!", "body");
                ch.queueDelete(q);
            }
        });

        SCENARIOS.put("work_queues", () -> {
            String q = name("tasks");
            try (Connection conn = connect(); Connection w1 = connect(); Connection w2 = connect()) {
                Channel pub = conn.createChannel();
                pub.queueDeclare(q, true, false, false, null);
                AtomicInteger total = new AtomicInteger();
                List<int[]> stats = new ArrayList<>(); // {done, unacked, maxUnacked}
                for (Connection w : List.of(w1, w2)) {
                    Channel ch = w.createChannel();
                    ch.basicQos(1);
                    int[] s = new int[3];
                    stats.add(s);
                    ch.basicConsume(q, false, new DefaultConsumer(ch) {
                        @Override
                        public void handleDelivery(String tag, Envelope env, AMQP.BasicProperties p, byte[] body) throws IOException {
                            synchronized (s) { s[1]++; s[2] = Math.max(s[2], s[1]); }
                            try { Thread.sleep(5); } catch (InterruptedException e) { throw new IOException(e); }
                            synchronized (s) { s[1]--; s[0]++; }
                            getChannel().basicAck(env.getDeliveryTag(), false);
                            total.incrementAndGet();
                        }
                    });
                }
                int n = 20;
                for (int i = 0; i < n; i++) pub.basicPublish("", q, MessageProperties.PERSISTENT_TEXT_PLAIN, utf8("task " + i));
                until(() -> total.get() == n, 15000, "all tasks");
                for (int[] s : stats) {
                    check(s[2] <= 1, "worker had " + s[2] + " unacked with prefetch 1");
                    check(s[0] > 0, "fair dispatch: a worker got no work");
                }
                pub.queueDelete(q);
            }
        });

        SCENARIOS.put("pubsub", () -> {
            String ex = name("logs");
            try (Connection conn = connect(); Connection s1 = connect(); Connection s2 = connect()) {
                Channel pub = conn.createChannel();
                pub.exchangeDeclare(ex, "fanout");
                pub.confirmSelect();
                Channel c1 = s1.createChannel(), c2 = s2.createChannel();
                String q1 = boundQueue(c1, ex, ""), q2 = boundQueue(c2, ex, "");
                pub.basicPublish(ex, "", null, utf8("log line"));
                pub.waitForConfirmsOrDie(5000);
                checkEq(str(getOne(c1, q1, 5000).getBody()), "log line", "first copy");
                checkEq(str(getOne(c2, q2, 5000).getBody()), "log line", "second copy");
                pub.exchangeDelete(ex);
            }
        });

        SCENARIOS.put("routing", () -> {
            String ex = name("direct_logs");
            try (Connection conn = connect()) {
                Channel pub = conn.createChannel();
                pub.exchangeDeclare(ex, "direct");
                pub.confirmSelect();
                Channel ch = conn.createChannel();
                String qa = boundQueue(ch, ex, "error"), qb = boundQueue(ch, ex, "info", "warning", "error");
                for (String sev : List.of("info", "warning", "error")) pub.basicPublish(ex, sev, null, utf8(sev));
                pub.waitForConfirmsOrDie(5000);
                checkEq(bodies(drain(ch, qa)), List.of("error"), "error-only queue");
                checkEq(bodies(drain(ch, qb)), List.of("info", "warning", "error"), "all-severities queue");
                pub.exchangeDelete(ex);
            }
        });

        SCENARIOS.put("topics", () -> {
            String ex = name("topic_logs");
            try (Connection conn = connect()) {
                Channel pub = conn.createChannel();
                pub.exchangeDeclare(ex, "topic");
                pub.confirmSelect();
                Channel ch = conn.createChannel();
                String q1 = boundQueue(ch, ex, "*.orange.*"), q2 = boundQueue(ch, ex, "*.*.rabbit", "lazy.#");
                for (String k : List.of("quick.orange.rabbit", "lazy.orange.elephant", "quick.orange.fox",
                        "lazy.brown.fox", "lazy.pink.rabbit", "quick.brown.fox", "orange",
                        "quick.orange.new.rabbit", "lazy.orange.new.rabbit", "lazy")) {
                    pub.basicPublish(ex, k, null, utf8(k));
                }
                pub.waitForConfirmsOrDie(5000);
                checkEq(keys(drain(ch, q1)), List.of("quick.orange.rabbit", "lazy.orange.elephant", "quick.orange.fox"), "q1");
                checkEq(keys(drain(ch, q2)), List.of("quick.orange.rabbit", "lazy.orange.elephant", "lazy.brown.fox",
                        "lazy.pink.rabbit", "lazy.orange.new.rabbit", "lazy"), "q2");
                pub.exchangeDelete(ex);
            }
        });

        SCENARIOS.put("rpc", () -> {
            String rpcQueue = name("rpc_queue");
            try (Connection server = connect(); Connection client = connect()) {
                Channel sch = server.createChannel();
                sch.queueDeclare(rpcQueue, false, false, true, null);
                sch.basicQos(1);
                sch.basicConsume(rpcQueue, false, (tag, d) -> {
                    int n = Integer.parseInt(str(d.getBody()));
                    AMQP.BasicProperties reply = new AMQP.BasicProperties.Builder()
                            .correlationId(d.getProperties().getCorrelationId()).build();
                    sch.basicPublish("", d.getProperties().getReplyTo(), reply, utf8(Long.toString(fib(n))));
                    sch.basicAck(d.getEnvelope().getDeliveryTag(), false);
                }, tag -> {});

                Channel cch = client.createChannel();
                String replyQueue = cch.queueDeclare().getQueue(); // exclusive, server-named
                Map<String, String> replies = new ConcurrentHashMap<>();
                cch.basicConsume(replyQueue, true, (tag, d) ->
                        replies.put(d.getProperties().getCorrelationId(), str(d.getBody())), tag -> {});
                for (int n : new int[]{1, 10, 30}) {
                    String corr = "corr-" + n;
                    cch.basicPublish("", rpcQueue, new AMQP.BasicProperties.Builder()
                            .replyTo(replyQueue).correlationId(corr).build(), utf8(Integer.toString(n)));
                    until(() -> replies.containsKey(corr), 5000, "reply " + corr);
                    checkEq(replies.get(corr), Long.toString(fib(n)), "fib(" + n + ")");
                }
            }
        });

        SCENARIOS.put("confirms_individual", () -> confirms((ch, q) -> {
            for (int i = 0; i < 100; i++) {
                ch.basicPublish("", q, null, utf8(Integer.toString(i)));
                ch.waitForConfirmsOrDie(5000);
            }
        }));

        SCENARIOS.put("confirms_batch", () -> confirms((ch, q) -> {
            for (int b = 0; b < 10; b++) {
                for (int i = 0; i < 10; i++) ch.basicPublish("", q, null, utf8(Integer.toString(i)));
                ch.waitForConfirmsOrDie(5000);
            }
        }));

        SCENARIOS.put("confirms_async", () -> confirms((ch, q) -> {
            ConcurrentSkipListSet<Long> outstanding = new ConcurrentSkipListSet<>();
            AtomicInteger nacks = new AtomicInteger();
            ch.addConfirmListener(new ConfirmListener() {
                void settle(long tag, boolean multiple) {
                    if (multiple) outstanding.headSet(tag, true).clear();
                    else outstanding.remove(tag);
                }
                @Override public void handleAck(long tag, boolean multiple) { settle(tag, multiple); }
                @Override public void handleNack(long tag, boolean multiple) { nacks.incrementAndGet(); settle(tag, multiple); }
            });
            for (int i = 0; i < 100; i++) {
                outstanding.add(ch.getNextPublishSeqNo());
                ch.basicPublish("", q, null, utf8(Integer.toString(i)));
            }
            until(outstanding::isEmpty, 10000, "all confirms");
            checkEq(nacks.get(), 0, "nacks");
        }));

        SCENARIOS.put("mandatory_return", () -> {
            try (Connection conn = connect()) {
                Channel ch = conn.createChannel();
                BlockingQueue<String> returned = new LinkedBlockingQueue<>();
                ch.addReturnListener((code, text, ex, key, props, body) -> returned.add(code + " " + text + " " + str(body)));
                ch.basicPublish("", name("nowhere"), true, null, utf8("lost"));
                checkEq(returned.poll(5, TimeUnit.SECONDS), "312 NO_ROUTE lost", "basic.return");
            }
        });

        SCENARIOS.put("nack_requeue", () -> {
            try (Connection conn = connect()) {
                Channel ch = conn.createChannel();
                String q = name("nack");
                ch.queueDeclare(q, false, true, false, null);
                ch.basicPublish("", q, null, utf8("again"));
                BlockingQueue<String> seen = new LinkedBlockingQueue<>();
                ch.basicConsume(q, false, (tag, d) -> {
                    seen.add(d.getEnvelope().isRedeliver() + " " + str(d.getBody()));
                    if (!d.getEnvelope().isRedeliver()) ch.basicNack(d.getEnvelope().getDeliveryTag(), false, true);
                    else ch.basicAck(d.getEnvelope().getDeliveryTag(), false);
                }, tag -> {});
                checkEq(seen.poll(5, TimeUnit.SECONDS), "false again", "first delivery");
                checkEq(seen.poll(5, TimeUnit.SECONDS), "true again", "redelivery");
            }
        });

        SCENARIOS.put("prefetch_limit", () -> {
            try (Connection conn = connect()) {
                Channel ch = conn.createChannel();
                String q = name("prefetch");
                ch.queueDeclare(q, false, true, false, null);
                int total = 30, limit = 5;
                ch.confirmSelect();
                for (int i = 0; i < total; i++) ch.basicPublish("", q, null, utf8(Integer.toString(i)));
                ch.waitForConfirmsOrDie(5000);
                ch.basicQos(limit);
                BlockingQueue<Long> unacked = new LinkedBlockingQueue<>();
                ch.basicConsume(q, false, (tag, d) -> unacked.add(d.getEnvelope().getDeliveryTag()), tag -> {});
                int done = 0;
                long end = System.currentTimeMillis() + 15000;
                while (done < total && System.currentTimeMillis() < end) {
                    // Let the broker push as much as it will before acking anything.
                    Thread.sleep(100);
                    List<Long> got = new ArrayList<>();
                    unacked.drainTo(got);
                    check(got.size() <= limit, got.size() + " unacked with prefetch " + limit);
                    if (!got.isEmpty()) {
                        check(got.size() == limit || done + got.size() == total, "only " + got.size() + " delivered while more are ready");
                        ch.basicAck(got.get(got.size() - 1), true);
                        done += got.size();
                    }
                }
                checkEq(done, total, "consumed");
            }
        });

        SCENARIOS.put("exclusive_locked", () -> {
            String q = name("exclusive");
            try (Connection a = connect(); Connection b = connect()) {
                a.createChannel().queueDeclare(q, false, true, false, null);
                String text = expectClose(() -> b.createChannel().queueDeclare(q, false, false, false, null), 405);
                check(text.startsWith("RESOURCE_LOCKED - "), "text " + text);
                expectClose(() -> b.createChannel().basicConsume(q, true, (t, d) -> {}, t -> {}), 405);
            }
        });

        SCENARIOS.put("passive_404", () -> {
            String q = name("missing");
            try (Connection conn = connect()) {
                String text = expectClose(() -> conn.createChannel().queueDeclarePassive(q), 404);
                checkEq(text, "NOT_FOUND - no queue '" + q + "' in vhost '/'", "text");
                Channel ch = conn.createChannel();
                ch.queueDeclare(q, false, true, false, null);
                ch.basicPublish("", q, null, utf8("still working"));
                checkEq(str(getOne(ch, q, 5000).getBody()), "still working", "after 404");
            }
        });

        SCENARIOS.put("redeclare_406", () -> {
            String q = name("redeclare");
            try (Connection conn = connect()) {
                conn.createChannel().queueDeclare(q, false, false, false, null);
                String text = expectClose(() -> conn.createChannel().queueDeclare(q, true, false, false, null), 406);
                checkEq(text, "PRECONDITION_FAILED - inequivalent arg 'durable' for queue '" + q
                        + "' in vhost '/': received 'true' but current is 'false'", "text");
                conn.createChannel().queueDelete(q);
            }
        });

        SCENARIOS.put("wrong_password", () -> {
            try (Connection conn = connect("wrong-password", 10)) {
                throw new AssertionError("login with a wrong password succeeded");
            } catch (AuthenticationFailureException e) {
                check(e.getMessage().contains("ACCESS_REFUSED"), "message " + e.getMessage());
            }
        });

        SCENARIOS.put("large_message", () -> {
            try (Connection conn = connect()) {
                Channel ch = conn.createChannel();
                String q = name("large");
                ch.queueDeclare(q, false, true, false, null);
                byte[] body = new byte[8 * 1024 * 1024];
                RANDOM.nextBytes(body);
                ch.basicPublish("", q, null, body);
                byte[] got = getOne(ch, q, 20000).getBody();
                checkEq(got.length, body.length, "length");
                checkEq(sha(got), sha(body), "sha256");
            }
        });

        SCENARIOS.put("many_channels", () -> {
            String q = name("channels");
            try (Connection conn = connect()) {
                List<Channel> chans = new ArrayList<>();
                for (int i = 0; i < 100; i++) {
                    Channel ch = conn.createChannel();
                    ch.confirmSelect();
                    chans.add(ch);
                }
                chans.get(0).queueDeclare(q, false, true, false, null);
                for (int i = 0; i < 100; i++) chans.get(i).basicPublish("", q, null, utf8(Integer.toString(i)));
                for (Channel ch : chans) ch.waitForConfirmsOrDie(5000);
                List<Integer> got = new ArrayList<>();
                for (GetResponse r : drain(chans.get(99), q)) got.add(Integer.parseInt(str(r.getBody())));
                Collections.sort(got);
                List<Integer> want = new ArrayList<>();
                for (int i = 0; i < 100; i++) want.add(i);
                checkEq(got, want, "one message per channel");
                for (Channel ch : chans) ch.close();
            }
        });

        SCENARIOS.put("heartbeat", () -> {
            try (Connection conn = connect(PASSWORD, 2)) {
                checkEq(conn.getHeartbeat(), 2, "negotiated heartbeat");
                Channel ch = conn.createChannel();
                String q = name("heartbeat");
                ch.queueDeclare(q, false, true, false, null);
                Thread.sleep(10000);
                check(conn.isOpen(), "connection closed while idle: " + conn.getCloseReason());
                ch.basicPublish("", q, null, utf8("alive"));
                checkEq(str(getOne(ch, q, 5000).getBody()), "alive", "after idle");
            }
        });

        SCENARIOS.put("server_cancel", () -> {
            String q = name("cancel");
            try (Connection a = connect()) {
                Channel ch = a.createChannel();
                ch.queueDeclare(q, false, false, false, null);
                BlockingQueue<String> cancelled = new LinkedBlockingQueue<>();
                String tag = ch.basicConsume(q, false, (t, d) -> {}, cancelled::add);
                try (Connection b = connect()) {
                    b.createChannel().queueDelete(q);
                }
                checkEq(cancelled.poll(5, TimeUnit.SECONDS), tag, "server-sent basic.cancel");
            }
        });

        SCENARIOS.put("close_clean", () -> {
            // RabbitMQ's "hello world" sender, 50 times: every close must succeed.
            String q = name("close");
            for (int i = 0; i < 50; i++) {
                try {
                    Connection conn = connect();
                    Channel ch = conn.createChannel();
                    ch.queueDeclare(q, false, false, false, null);
                    ch.basicPublish("", q, null, utf8("Hello World!"));
                    ch.close();
                    closeClean(conn);
                } catch (Exception | AssertionError e) {
                    throw new AssertionError("iteration " + i + ": " + e, e);
                }
            }
            deleteCounting(q, 50, "messages published before each close");
        });

        SCENARIOS.put("close_after_burst", () -> {
            String q = name("burst");
            Connection conn = connect();
            Channel ch = conn.createChannel();
            ch.queueDeclare(q, false, false, false, null);
            int n = 5000;
            for (int i = 0; i < n; i++) ch.basicPublish("", q, null, utf8("burst " + i));
            closeClean(conn);
            deleteCounting(q, n, "messages published before close");
        });

        SCENARIOS.put("cc_bcc", () -> {
            try (Connection conn = connect()) {
                Channel ch = conn.createChannel();
                ccBccRound(ch, "", null);
                String ex = name("cc");
                ch.exchangeDeclare(ex, "direct");
                ccBccRound(ch, ex, List.of("key-a", "key-b", "key-c"));
                ch.exchangeDelete(ex);
            }
        });

        SCENARIOS.put("channel_close_race", () -> {
            // The broker's channel.close (404, no exchange) and ours cross on
            // the wire; then another channel must work and the connection
            // close cleanly. That channel is opened first: this client reuses
            // a freed channel number at once, and would take the broker's late
            // close-ok for the old channel as the reply to the new
            // channel.open (against RabbitMQ too).
            for (int i = 0; i < 20; i++) {
                try {
                    Connection conn = connect();
                    Channel ch2 = conn.createChannel();
                    Channel ch = conn.createChannel();
                    ch.basicPublish(name("missing"), "key", null, utf8("lost"));
                    try {
                        ch.close();
                    } catch (ShutdownSignalException e) {
                        // The broker's close won, or had already closed the channel.
                        checkEq(((AMQP.Channel.Close) e.getReason()).getReplyCode(), 404, "reply code");
                    }
                    String q = ch2.queueDeclare().getQueue();
                    ch2.basicPublish("", q, null, utf8("after the race"));
                    checkEq(str(getOne(ch2, q, 5000).getBody()), "after the race", "message on the second channel");
                    closeClean(conn);
                } catch (Exception | AssertionError e) {
                    throw new AssertionError("iteration " + i + ": " + e, e);
                }
            }
        });
    }

    /** Closes conn and checks that the close was ours and clean. */
    static void closeClean(Connection conn) throws Exception {
        conn.close(5000);
        ShutdownSignalException why = conn.getCloseReason();
        check(why.isInitiatedByApplication() && why.getCause() == null, "connection closed with " + why);
    }

    /** Deletes q on a new connection and checks how many messages it held. */
    static void deleteCounting(String q, int want, String what) throws Exception {
        try (Connection conn = connect()) {
            checkEq(conn.createChannel().queueDelete(q).getMessageCount(), want, what);
        }
    }

    /** Header values as text: long strings as strings, arrays as [a,b], tables sorted. */
    static String show(Object v) {
        if (v instanceof List<?> l) {
            List<String> out = new ArrayList<>();
            for (Object o : l) out.add(show(o));
            return "[" + String.join(",", out) + "]";
        }
        if (v instanceof Map<?, ?> m) {
            Map<String, String> out = new TreeMap<>();
            m.forEach((k, x) -> out.put(k.toString(), show(x)));
            return out.toString();
        }
        return String.valueOf(v);
    }

    /** One publish with CC and BCC headers; keys route to queues a, b, c (null: the queue names, default exchange). */
    static void ccBccRound(Channel ch, String ex, List<String> keys) throws Exception {
        List<String> qs = new ArrayList<>();
        for (String x : List.of("a", "b", "c")) qs.add(ch.queueDeclare(name("cc-" + x), false, true, false, null).getQueue());
        if (keys == null) keys = qs;
        for (int i = 0; i < 3 && !ex.isEmpty(); i++) ch.queueBind(qs.get(i), ex, keys.get(i));
        Map<String, Object> headers = new HashMap<>();
        headers.put("CC", List.of(keys.get(1)));
        headers.put("BCC", List.of(keys.get(2)));
        headers.put("x-other", "kept");
        ch.basicPublish(ex, keys.get(0), new AMQP.BasicProperties.Builder().headers(headers).build(), utf8("cc and bcc"));
        // Each queue gets one copy, with the publish's routing key, and BCC gone.
        List<String> got = new ArrayList<>(), want = new ArrayList<>();
        for (int i = 0; i < 3; i++) {
            String x = "abc".substring(i, i + 1), seen;
            try {
                GetResponse r = getOne(ch, qs.get(i), 2000);
                seen = "key=" + r.getEnvelope().getRoutingKey() + " body=" + str(r.getBody())
                        + " headers=" + show(r.getProps().getHeaders()) + " second_copy=" + (ch.basicGet(qs.get(i), true) != null);
            } catch (AssertionError e) {
                seen = e.getMessage();
            }
            got.add(x + ": " + seen);
            want.add(x + ": key=" + keys.get(0) + " body=cc and bcc headers={CC=[" + keys.get(1) + "], x-other=kept} second_copy=false");
        }
        check(got.equals(want), "deliveries:\n" + String.join("\n", got) + "\nwant:\n" + String.join("\n", want));
    }

    interface ConfirmBody { void run(Channel ch, String q) throws Exception; }

    static void confirms(ConfirmBody body) throws Exception {
        try (Connection conn = connect()) {
            Channel ch = conn.createChannel();
            String q = name("confirms");
            ch.queueDeclare(q, false, true, false, null);
            ch.confirmSelect();
            body.run(ch, q);
            checkEq(ch.queueDeclarePassive(q).getMessageCount(), 100, "messages confirmed");
        }
    }

    static List<String> bodies(List<GetResponse> rs) {
        List<String> out = new ArrayList<>();
        for (GetResponse r : rs) out.add(str(r.getBody()));
        return out;
    }

    static List<String> keys(List<GetResponse> rs) {
        List<String> out = new ArrayList<>();
        for (GetResponse r : rs) out.add(r.getEnvelope().getRoutingKey());
        return out;
    }

    public static void main(String[] args) {
        if (args.length != 1) {
            System.err.println("usage: java Interop SCENARIO");
            System.exit(2);
        }
        Scenario s = SCENARIOS.get(args[0]);
        if (s == null) {
            System.out.println("n/a: no such scenario for this client");
            System.exit(3);
        }
        try {
            s.run();
        } catch (Throwable t) {
            t.printStackTrace();
            System.exit(1);
        }
        System.exit(0);
    }
}
