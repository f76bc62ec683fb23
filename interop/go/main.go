// amqp091-go (Debian's golang-github-rabbitmq-amqp091-go-dev) against Warren.
//
// Usage: go-client SCENARIO. Exit 0 is a pass, 3 means the scenario cannot
// be expressed with this client, anything else is a failure.
package main

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

const exitNA = 3

var (
	host     = env("WARREN_HOST", "127.0.0.1")
	port     = env("WARREN_PORT", "5672")
	user     = env("WARREN_USER", "guest")
	password = env("WARREN_PASSWORD", "guest")
)

func env(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

// fail aborts the scenario; main turns the panic into a failing exit code.
func fail(format string, args ...any) { panic(fmt.Errorf(format, args...)) }

func must[T any](v T, err error) T {
	if err != nil {
		fail("%v", err)
	}
	return v
}

func ok(err error) {
	if err != nil {
		fail("%v", err)
	}
}

func check(cond bool, format string, args ...any) {
	if !cond {
		fail(format, args...)
	}
}

func connectWith(pw string, heartbeat time.Duration) (*amqp.Connection, error) {
	url := fmt.Sprintf("amqp://%s:%s@%s:%s/", user, pw, host, port)
	cfg := amqp.Config{Heartbeat: heartbeat, Locale: "en_US"}
	if heartbeat == 0 {
		cfg.Heartbeat = 10 * time.Second
	}
	return amqp.DialConfig(url, cfg)
}

func connect() *amqp.Connection { return must(connectWith(password, 0)) }

func name(p string) string {
	b := make([]byte, 5)
	_, _ = rand.Read(b)
	return "interop-go-" + p + "-" + hex.EncodeToString(b)
}

func publish(ch *amqp.Channel, ex, key string, body []byte, mandatory bool, p amqp.Publishing) {
	p.Body = body
	ok(ch.PublishWithContext(context.Background(), ex, key, mandatory, false, p))
}

func getOne(ch *amqp.Channel, q string, within time.Duration) amqp.Delivery {
	end := time.Now().Add(within)
	for time.Now().Before(end) {
		d, found := must2(ch.Get(q, true))
		if found {
			return d
		}
		time.Sleep(20 * time.Millisecond)
	}
	fail("no message on %s", q)
	return amqp.Delivery{}
}

func must2(d amqp.Delivery, found bool, err error) (amqp.Delivery, bool) {
	ok(err)
	return d, found
}

func drain(ch *amqp.Channel, q string) []amqp.Delivery {
	var out []amqp.Delivery
	for i := 0; i < 1000; i++ {
		d, found := must2(ch.Get(q, true))
		if !found {
			return out
		}
		out = append(out, d)
	}
	fail("queue did not drain")
	return nil
}

func recv[T any](c <-chan T, within time.Duration, what string) T {
	select {
	case v, open := <-c:
		check(open, "%s: channel closed", what)
		return v
	case <-time.After(within):
		fail("timed out waiting for %s", what)
	}
	var zero T
	return zero
}

// expectClose checks that err is the channel.close RabbitMQ would send.
func expectClose(err error, code int) string {
	var e *amqp.Error
	check(errors.As(err, &e), "expected channel.close %d, got %v", code, err)
	check(e.Code == code, "reply code %d (%s), want %d", e.Code, e.Reason, code)
	return e.Reason
}

func fib(n int) int {
	a, b := 0, 1
	for i := 0; i < n; i++ {
		a, b = b, a+b
	}
	return a
}

func boundQueue(conn *amqp.Connection, ex string, keys ...string) (*amqp.Channel, string) {
	ch := must(conn.Channel())
	q := must(ch.QueueDeclare("", false, false, true, false, nil))
	check(strings.HasPrefix(q.Name, "amq.gen-"), "server-named queue %q", q.Name)
	for _, k := range keys {
		ok(ch.QueueBind(q.Name, k, ex, false, nil))
	}
	return ch, q.Name
}

func confirmChannel(conn *amqp.Connection) (*amqp.Channel, chan amqp.Confirmation) {
	ch := must(conn.Channel())
	ok(ch.Confirm(false))
	return ch, ch.NotifyPublish(make(chan amqp.Confirmation, 1000))
}

func waitConfirms(confirms <-chan amqp.Confirmation, n int) {
	for i := 0; i < n; i++ {
		c := recv(confirms, 5*time.Second, "confirm")
		check(c.Ack, "publish %d nacked", c.DeliveryTag)
	}
}

// iterate runs fn n times and names the iteration that fails.
func iterate(n int, fn func()) {
	for i := 0; i < n; i++ {
		func() {
			defer func() {
				if r := recover(); r != nil {
					fail("iteration %d: %v", i, r)
				}
			}()
			fn()
		}()
	}
}

// closeConn closes conn and checks that neither Close nor the library's
// close notification reports an error.
func closeConn(conn *amqp.Connection, closed <-chan *amqp.Error) {
	ok(conn.Close())
	select {
	case e := <-closed:
		check(e == nil, "connection closed with %v", e)
	case <-time.After(5 * time.Second):
		fail("no close notification within 5s")
	}
}

// deleteCounting deletes q on a new connection and checks how many messages it held.
func deleteCounting(q string, want int, what string) {
	conn := connect()
	defer conn.Close()
	n := must(must(conn.Channel()).QueueDelete(q, false, false, false))
	check(n == want, "%s: %d, want %d", what, n, want)
}

// ccBccRound publishes once with CC and BCC headers; keys route to queues a,
// b and c (on the default exchange, keys is nil and the queue names are used).
func ccBccRound(ch *amqp.Channel, ex string, keys []string) {
	var qs []string
	for _, x := range []string{"a", "b", "c"} {
		qs = append(qs, must(ch.QueueDeclare(name("cc-"+x), false, false, true, false, nil)).Name)
	}
	if keys == nil {
		keys = qs
	}
	for i := range qs {
		if ex != "" {
			ok(ch.QueueBind(qs[i], keys[i], ex, false, nil))
		}
	}
	headers := amqp.Table{"CC": []interface{}{keys[1]}, "BCC": []interface{}{keys[2]}, "x-other": "kept"}
	publish(ch, ex, keys[0], []byte("cc and bcc"), false, amqp.Publishing{Headers: headers})
	// Each queue gets one copy, with the publish's routing key, and BCC gone.
	var got, want []string
	for i, q := range qs {
		seen := "no message"
		for end := time.Now().Add(2 * time.Second); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
			if d, found := must2(ch.Get(q, true)); found {
				_, again := must2(ch.Get(q, true))
				seen = fmt.Sprintf("key=%s body=%s headers=%v second_copy=%v", d.RoutingKey, d.Body, d.Headers, again)
				break
			}
		}
		got = append(got, fmt.Sprintf("%c: %s", 'a'+i, seen))
		want = append(want, fmt.Sprintf("%c: key=%s body=cc and bcc headers=%v second_copy=false", 'a'+i, keys[0],
			amqp.Table{"CC": []interface{}{keys[1]}, "x-other": "kept"}))
	}
	check(strings.Join(got, "\n") == strings.Join(want, "\n"), "deliveries:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
}

var scenarios = map[string]func(){
	"hello": func() {
		conn := connect()
		defer conn.Close()
		ch := must(conn.Channel())
		q := name("hello")
		must(ch.QueueDeclare(q, false, false, false, false, nil))
		publish(ch, "", q, []byte("Hello World!"), false, amqp.Publishing{})
		msgs := must(ch.Consume(q, "", true, false, false, false, nil))
		d := recv(msgs, 5*time.Second, "hello")
		check(string(d.Body) == "Hello World!", "body %q", d.Body)
		must(ch.QueueDelete(q, false, false, false))
	},

	"work_queues": func() {
		conn := connect()
		defer conn.Close()
		pub := must(conn.Channel())
		q := name("tasks")
		must(pub.QueueDeclare(q, true, false, false, false, nil))
		type worker struct {
			ch   *amqp.Channel
			msgs <-chan amqp.Delivery
			done int
		}
		var workers []*worker
		for i := 0; i < 2; i++ {
			wc := connect()
			defer wc.Close()
			ch := must(wc.Channel())
			ok(ch.Qos(1, 0, false))
			workers = append(workers, &worker{ch: ch, msgs: must(ch.Consume(q, "", false, false, false, false, nil))})
		}
		n := 20
		for i := 0; i < n; i++ {
			publish(pub, "", q, []byte(fmt.Sprintf("task %d", i)), false, amqp.Publishing{DeliveryMode: amqp.Persistent})
		}
		end := time.Now().Add(15 * time.Second)
		for workers[0].done+workers[1].done < n && time.Now().Before(end) {
			for _, w := range workers {
				select {
				case d := <-w.msgs:
					// Holding this task, the worker must not be sent another.
					select {
					case <-w.msgs:
						fail("worker has more than 1 unacked with prefetch 1")
					case <-time.After(20 * time.Millisecond):
					}
					ok(d.Ack(false))
					w.done++
				case <-time.After(10 * time.Millisecond):
				}
			}
		}
		check(workers[0].done+workers[1].done == n, "tasks done %d+%d", workers[0].done, workers[1].done)
		check(workers[0].done > 0 && workers[1].done > 0, "fair dispatch: %d and %d", workers[0].done, workers[1].done)
		must(pub.QueueDelete(q, false, false, false))
	},

	"pubsub": func() {
		conn := connect()
		defer conn.Close()
		pub, confirms := confirmChannel(conn)
		ex := name("logs")
		ok(pub.ExchangeDeclare(ex, "fanout", false, false, false, false, nil))
		type sub struct {
			ch *amqp.Channel
			q  string
		}
		var subs []sub
		for i := 0; i < 2; i++ {
			c := connect()
			defer c.Close()
			ch, q := boundQueue(c, ex, "")
			subs = append(subs, sub{ch, q})
		}
		publish(pub, ex, "", []byte("log line"), false, amqp.Publishing{})
		waitConfirms(confirms, 1)
		for _, s := range subs {
			check(string(getOne(s.ch, s.q, 5*time.Second).Body) == "log line", "fanout copy")
		}
		ok(pub.ExchangeDelete(ex, false, false))
	},

	"routing": func() {
		conn := connect()
		defer conn.Close()
		pub, confirms := confirmChannel(conn)
		ex := name("direct_logs")
		ok(pub.ExchangeDeclare(ex, "direct", false, false, false, false, nil))
		cha, qa := boundQueue(conn, ex, "error")
		chb, qb := boundQueue(conn, ex, "info", "warning", "error")
		for _, sev := range []string{"info", "warning", "error"} {
			publish(pub, ex, sev, []byte(sev), false, amqp.Publishing{})
		}
		waitConfirms(confirms, 3)
		check(bodies(drain(cha, qa)) == "error", "error-only queue")
		check(bodies(drain(chb, qb)) == "info,warning,error", "all-severities queue")
		ok(pub.ExchangeDelete(ex, false, false))
	},

	"topics": func() {
		conn := connect()
		defer conn.Close()
		pub, confirms := confirmChannel(conn)
		ex := name("topic_logs")
		ok(pub.ExchangeDeclare(ex, "topic", false, false, false, false, nil))
		ch1, q1 := boundQueue(conn, ex, "*.orange.*")
		ch2, q2 := boundQueue(conn, ex, "*.*.rabbit", "lazy.#")
		keys := []string{"quick.orange.rabbit", "lazy.orange.elephant", "quick.orange.fox",
			"lazy.brown.fox", "lazy.pink.rabbit", "quick.brown.fox", "orange",
			"quick.orange.new.rabbit", "lazy.orange.new.rabbit", "lazy"}
		for _, k := range keys {
			publish(pub, ex, k, []byte(k), false, amqp.Publishing{})
		}
		waitConfirms(confirms, len(keys))
		got1, got2 := routingKeys(drain(ch1, q1)), routingKeys(drain(ch2, q2))
		check(got1 == "quick.orange.rabbit,lazy.orange.elephant,quick.orange.fox", "q1: %s", got1)
		check(got2 == "quick.orange.rabbit,lazy.orange.elephant,lazy.brown.fox,lazy.pink.rabbit,lazy.orange.new.rabbit,lazy", "q2: %s", got2)
		ok(pub.ExchangeDelete(ex, false, false))
	},

	"rpc": func() {
		server := connect()
		defer server.Close()
		sch := must(server.Channel())
		rpcQueue := name("rpc_queue")
		must(sch.QueueDeclare(rpcQueue, false, true, false, false, nil))
		ok(sch.Qos(1, 0, false))
		requests := must(sch.Consume(rpcQueue, "", false, false, false, false, nil))
		go func() {
			for d := range requests {
				n, _ := strconv.Atoi(string(d.Body))
				_ = sch.PublishWithContext(context.Background(), "", d.ReplyTo, false, false,
					amqp.Publishing{CorrelationId: d.CorrelationId, Body: []byte(strconv.Itoa(fib(n)))})
				_ = d.Ack(false)
			}
		}()

		client := connect()
		defer client.Close()
		cch := must(client.Channel())
		replyQ := must(cch.QueueDeclare("", false, false, true, false, nil))
		replies := must(cch.Consume(replyQ.Name, "", true, false, false, false, nil))
		for _, n := range []int{1, 10, 30} {
			corr := fmt.Sprintf("corr-%d", n)
			publish(cch, "", rpcQueue, []byte(strconv.Itoa(n)), false, amqp.Publishing{ReplyTo: replyQ.Name, CorrelationId: corr})
			for {
				d := recv(replies, 5*time.Second, "rpc reply")
				if d.CorrelationId == corr {
					check(string(d.Body) == strconv.Itoa(fib(n)), "fib(%d) = %s", n, d.Body)
					break
				}
			}
		}
	},

	"confirms_individual": func() {
		conn := connect()
		defer conn.Close()
		// amqp091-go 1.5.0 (Debian) registers a deferred confirmation only
		// after sending the publish, so an ack that arrives first is dropped
		// and DeferredConfirmation.Wait hangs (a client race that a broker
		// answering within microseconds hits). NotifyPublish is registered
		// before any publish, so each publish waits for its own confirm here.
		ch, confirms := confirmChannel(conn)
		q := name("confirms")
		must(ch.QueueDeclare(q, false, false, true, false, nil))
		for i := 0; i < 100; i++ {
			publish(ch, "", q, []byte(strconv.Itoa(i)), false, amqp.Publishing{})
			waitConfirms(confirms, 1)
		}
		check(must(ch.QueueInspect(q)).Messages == 100, "messages confirmed")
	},

	"confirms_batch": func() {
		conn := connect()
		defer conn.Close()
		ch, confirms := confirmChannel(conn)
		q := name("confirms")
		must(ch.QueueDeclare(q, false, false, true, false, nil))
		for b := 0; b < 10; b++ {
			for i := 0; i < 10; i++ {
				publish(ch, "", q, []byte(strconv.Itoa(i)), false, amqp.Publishing{})
			}
			waitConfirms(confirms, 10)
		}
		check(must(ch.QueueInspect(q)).Messages == 100, "messages confirmed")
	},

	"confirms_async": func() {
		conn := connect()
		defer conn.Close()
		ch := must(conn.Channel())
		ok(ch.Confirm(false))
		acks, nacks := ch.NotifyConfirm(make(chan uint64, 1000), make(chan uint64, 1000))
		q := name("confirms")
		must(ch.QueueDeclare(q, false, false, true, false, nil))
		done := make(chan [2]int)
		go func() {
			a, n := 0, 0
			for a+n < 100 {
				select {
				case <-acks:
					a++
				case <-nacks:
					n++
				case <-time.After(5 * time.Second):
					done <- [2]int{a, n}
					return
				}
			}
			done <- [2]int{a, n}
		}()
		for i := 0; i < 100; i++ {
			publish(ch, "", q, []byte(strconv.Itoa(i)), false, amqp.Publishing{})
		}
		r := <-done
		check(r[0] == 100 && r[1] == 0, "acks %d nacks %d", r[0], r[1])
	},

	"mandatory_return": func() {
		conn := connect()
		defer conn.Close()
		ch := must(conn.Channel())
		returns := ch.NotifyReturn(make(chan amqp.Return, 1))
		publish(ch, "", name("nowhere"), []byte("lost"), true, amqp.Publishing{})
		r := recv(returns, 5*time.Second, "basic.return")
		check(r.ReplyCode == 312 && r.ReplyText == "NO_ROUTE" && string(r.Body) == "lost", "return %d %q %q", r.ReplyCode, r.ReplyText, r.Body)
	},

	"nack_requeue": func() {
		conn := connect()
		defer conn.Close()
		ch := must(conn.Channel())
		q := name("nack")
		must(ch.QueueDeclare(q, false, false, true, false, nil))
		publish(ch, "", q, []byte("again"), false, amqp.Publishing{})
		msgs := must(ch.Consume(q, "", false, false, false, false, nil))
		d := recv(msgs, 5*time.Second, "delivery")
		check(!d.Redelivered && string(d.Body) == "again", "first delivery")
		ok(d.Nack(false, true))
		d = recv(msgs, 5*time.Second, "redelivery")
		check(d.Redelivered && string(d.Body) == "again", "second delivery redelivered=%v", d.Redelivered)
		ok(d.Ack(false))
	},

	"prefetch_limit": func() {
		conn := connect()
		defer conn.Close()
		ch, confirms := confirmChannel(conn)
		q := name("prefetch")
		must(ch.QueueDeclare(q, false, false, true, false, nil))
		total, limit := 30, 5
		for i := 0; i < total; i++ {
			publish(ch, "", q, []byte(strconv.Itoa(i)), false, amqp.Publishing{})
		}
		waitConfirms(confirms, total)
		ok(ch.Qos(limit, 0, false))
		msgs := must(ch.Consume(q, "", false, false, false, false, nil))
		done := 0
		end := time.Now().Add(15 * time.Second)
		for done < total && time.Now().Before(end) {
			// Let the broker push as much as it will before acking anything.
			time.Sleep(100 * time.Millisecond)
			got := pending(msgs)
			check(len(got) <= limit, "%d unacked with prefetch %d", len(got), limit)
			if len(got) > 0 {
				check(len(got) == limit || done+len(got) == total, "only %d delivered while more are ready", len(got))
				ok(got[len(got)-1].Ack(true))
				done += len(got)
			}
		}
		check(done == total, "consumed %d of %d", done, total)
	},

	"exclusive_locked": func() {
		a := connect()
		defer a.Close()
		q := name("exclusive")
		must(must(a.Channel()).QueueDeclare(q, false, false, true, false, nil))
		b := connect()
		defer b.Close()
		_, err := must(b.Channel()).QueueDeclare(q, false, false, false, false, nil)
		check(strings.HasPrefix(expectClose(err, 405), "RESOURCE_LOCKED - "), "text")
		_, err = must(b.Channel()).Consume(q, "", false, false, false, false, nil)
		expectClose(err, 405)
	},

	"passive_404": func() {
		conn := connect()
		defer conn.Close()
		q := name("missing")
		_, err := must(conn.Channel()).QueueDeclarePassive(q, false, false, false, false, nil)
		text := expectClose(err, 404)
		check(text == fmt.Sprintf("NOT_FOUND - no queue '%s' in vhost '/'", q), "text %q", text)
		ch := must(conn.Channel())
		must(ch.QueueDeclare(q, false, false, true, false, nil))
		publish(ch, "", q, []byte("still working"), false, amqp.Publishing{})
		check(string(getOne(ch, q, 5*time.Second).Body) == "still working", "after 404")
	},

	"redeclare_406": func() {
		conn := connect()
		defer conn.Close()
		q := name("redeclare")
		must(must(conn.Channel()).QueueDeclare(q, false, false, false, false, nil))
		_, err := must(conn.Channel()).QueueDeclare(q, true, false, false, false, nil)
		text := expectClose(err, 406)
		want := fmt.Sprintf("PRECONDITION_FAILED - inequivalent arg 'durable' for queue '%s' in vhost '/': received 'true' but current is 'false'", q)
		check(text == want, "text %q", text)
		must(must(conn.Channel()).QueueDelete(q, false, false, false))
	},

	"wrong_password": func() {
		conn, err := connectWith("wrong-password", 0)
		if err == nil {
			conn.Close()
			fail("login with a wrong password succeeded")
		}
		var e *amqp.Error
		if errors.As(err, &e) && e.Code == 403 {
			return
		}
		check(errors.Is(err, amqp.ErrCredentials), "error %v", err)
	},

	"large_message": func() {
		conn := connect()
		defer conn.Close()
		ch := must(conn.Channel())
		q := name("large")
		must(ch.QueueDeclare(q, false, false, true, false, nil))
		body := make([]byte, 8*1024*1024)
		_, _ = rand.Read(body)
		publish(ch, "", q, body, false, amqp.Publishing{})
		got := getOne(ch, q, 20*time.Second)
		check(len(got.Body) == len(body) && sha256.Sum256(got.Body) == sha256.Sum256(body), "body of %d bytes differs", len(got.Body))
	},

	"many_channels": func() {
		conn := connect()
		defer conn.Close()
		q := name("channels")
		var chans []*amqp.Channel
		var confirms []chan amqp.Confirmation
		for i := 0; i < 100; i++ {
			ch, c := confirmChannel(conn)
			chans, confirms = append(chans, ch), append(confirms, c)
		}
		must(chans[0].QueueDeclare(q, false, false, true, false, nil))
		for i, ch := range chans {
			publish(ch, "", q, []byte(strconv.Itoa(i)), false, amqp.Publishing{})
		}
		for _, c := range confirms {
			waitConfirms(c, 1)
		}
		var got []int
		for _, d := range drain(chans[99], q) {
			n, _ := strconv.Atoi(string(d.Body))
			got = append(got, n)
		}
		sort.Ints(got)
		check(len(got) == 100 && got[0] == 0 && got[99] == 99, "got %d messages", len(got))
		for _, ch := range chans {
			ok(ch.Close())
		}
	},

	"heartbeat": func() {
		conn := must(connectWith(password, 2*time.Second))
		defer conn.Close()
		closed := conn.NotifyClose(make(chan *amqp.Error, 1))
		ch := must(conn.Channel())
		q := name("heartbeat")
		must(ch.QueueDeclare(q, false, false, true, false, nil))
		select {
		case e := <-closed:
			fail("connection closed while idle: %v", e)
		case <-time.After(10 * time.Second):
		}
		publish(ch, "", q, []byte("alive"), false, amqp.Publishing{})
		check(string(getOne(ch, q, 5*time.Second).Body) == "alive", "after idle")
	},

	"close_clean": func() {
		// RabbitMQ's "hello world" sender, 50 times: every close must succeed.
		q := name("close")
		iterate(50, func() {
			conn := connect()
			closed := conn.NotifyClose(make(chan *amqp.Error, 1))
			ch := must(conn.Channel())
			must(ch.QueueDeclare(q, false, false, false, false, nil))
			publish(ch, "", q, []byte("Hello World!"), false, amqp.Publishing{})
			ok(ch.Close())
			closeConn(conn, closed)
		})
		deleteCounting(q, 50, "messages published before each close")
	},

	"close_after_burst": func() {
		conn := connect()
		closed := conn.NotifyClose(make(chan *amqp.Error, 1))
		ch := must(conn.Channel())
		q := name("burst")
		must(ch.QueueDeclare(q, false, false, false, false, nil))
		n := 5000
		for i := 0; i < n; i++ {
			publish(ch, "", q, []byte(fmt.Sprintf("burst %d", i)), false, amqp.Publishing{})
		}
		closeConn(conn, closed)
		deleteCounting(q, n, "messages published before close")
	},

	"cc_bcc": func() {
		conn := connect()
		defer conn.Close()
		ch := must(conn.Channel())
		ccBccRound(ch, "", nil)
		ex := name("cc")
		ok(ch.ExchangeDeclare(ex, "direct", false, false, false, false, nil))
		ccBccRound(ch, ex, []string{"key-a", "key-b", "key-c"})
		ok(ch.ExchangeDelete(ex, false, false))
	},

	"channel_close_race": func() {
		// The broker's channel.close (404, no exchange) and ours cross on
		// the wire; then another channel must work and the connection
		// close cleanly. That channel is opened first: this library reuses
		// a freed channel number at once, and would take the broker's late
		// close-ok for the old channel as the reply to the new channel.open
		// (against RabbitMQ too).
		iterate(20, func() {
			conn := connect()
			closed := conn.NotifyClose(make(chan *amqp.Error, 1))
			ch2 := must(conn.Channel())
			ch := must(conn.Channel())
			publish(ch, name("missing"), "key", []byte("lost"), false, amqp.Publishing{})
			// Ours may win, or the broker's (404), or it may have closed the channel already.
			if err := ch.Close(); err != nil && !errors.Is(err, amqp.ErrClosed) {
				expectClose(err, 404)
			}
			q := must(ch2.QueueDeclare("", false, false, true, false, nil))
			publish(ch2, "", q.Name, []byte("after the race"), false, amqp.Publishing{})
			check(string(getOne(ch2, q.Name, 5*time.Second).Body) == "after the race", "message on the second channel")
			closeConn(conn, closed)
		})
	},

	"server_cancel": func() {
		a := connect()
		defer a.Close()
		ch := must(a.Channel())
		q := name("cancel")
		must(ch.QueueDeclare(q, false, false, false, false, nil))
		cancels := ch.NotifyCancel(make(chan string, 1))
		must(ch.Consume(q, "interop-consumer", false, false, false, false, nil))
		b := connect()
		must(must(b.Channel()).QueueDelete(q, false, false, false))
		b.Close()
		tag := recv(cancels, 5*time.Second, "server-sent basic.cancel")
		check(tag == "interop-consumer", "cancelled tag %q", tag)
	},

	// x-consumer-timeout 1000 on the queue (the broker's default stays 30
	// minutes): a consumer that never acks loses its channel with 406 and
	// RabbitMQ's text; the message comes back redelivered.
	"consumer_timeout": func() {
		conn := connect()
		defer conn.Close()
		ch := must(conn.Channel())
		closed := ch.NotifyClose(make(chan *amqp.Error, 1))
		q := name("ctimeout")
		must(ch.QueueDeclare(q, false, false, true, false, amqp.Table{"x-consumer-timeout": int32(1000)}))
		publish(ch, "", q, []byte("slow"), false, amqp.Publishing{})
		msgs := must(ch.Consume(q, "", false, false, false, false, nil))
		d := recv(msgs, 5*time.Second, "delivery")
		check(!d.Redelivered, "first delivery redelivered")
		e := recv(closed, 10*time.Second, "channel.close")
		check(e != nil && e.Code == 406, "close %v", e)
		want := "PRECONDITION_FAILED - delivery acknowledgement on channel 1 timed out. Timeout value used: 1000 ms. This timeout value can be configured, see consumers doc guide to learn more"
		check(e.Reason == want, "close text %q", e.Reason)
		ch2 := must(conn.Channel())
		d = getOne(ch2, q, 5*time.Second)
		check(d.Redelivered && string(d.Body) == "slow", "requeued message redelivered=%v", d.Redelivered)
		// A consumer that acks in time keeps its channel.
		closed2 := ch2.NotifyClose(make(chan *amqp.Error, 1))
		publish(ch2, "", q, []byte("fast"), false, amqp.Publishing{})
		msgs = must(ch2.Consume(q, "", false, false, false, false, nil))
		d = recv(msgs, 5*time.Second, "delivery")
		ok(d.Ack(false))
		select {
		case e := <-closed2:
			fail("acking consumer's channel closed: %v", e)
		case <-time.After(2500 * time.Millisecond):
		}
	},

	// A quorum queue with x-delivery-limit 2: deliveries counted 0, 1, 2 in
	// x-delivery-count, each nacked back; then dead-lettered (reason
	// delivery_limit) through the default exchange to the dlq.
	"delivery_limit": func() {
		conn := connect()
		defer conn.Close()
		ch := must(conn.Channel())
		q, dlq := name("dlimit"), name("dlimit-dlq")
		must(ch.QueueDeclare(dlq, false, false, true, false, nil))
		must(ch.QueueDeclare(q, true, false, false, false, amqp.Table{
			"x-queue-type": "quorum", "x-delivery-limit": int32(2),
			"x-dead-letter-exchange": "", "x-dead-letter-routing-key": dlq,
		}))
		defer func() { must(ch.QueueDelete(q, false, false, false)) }()
		publish(ch, "", q, []byte("poison"), false, amqp.Publishing{})
		msgs := must(ch.Consume(q, "", false, false, false, false, nil))
		for i := int32(0); i < 3; i++ {
			d := recv(msgs, 5*time.Second, "delivery")
			check(d.Redelivered == (i > 0), "delivery %d redelivered=%v", i, d.Redelivered)
			check(d.Headers["x-delivery-count"] == i, "delivery %d x-delivery-count %v", i, d.Headers["x-delivery-count"])
			ok(d.Nack(false, true))
		}
		d := getOne(ch, dlq, 5*time.Second)
		check(string(d.Body) == "poison", "dead letter %q", d.Body)
		check(d.Headers["x-first-death-reason"] == "delivery_limit", "x-first-death-reason %v", d.Headers["x-first-death-reason"])
		deaths, _ := d.Headers["x-death"].([]interface{})
		check(len(deaths) == 1, "x-death %v", d.Headers["x-death"])
		death, _ := deaths[0].(amqp.Table)
		check(death["reason"] == "delivery_limit", "x-death reason %v", death["reason"])
		select {
		case d := <-msgs:
			fail("delivered again after the limit: %q", d.Body)
		case <-time.After(300 * time.Millisecond):
		}
	},

	// The delayed-retry pattern: the first attempt fails and is republished
	// to an x-delayed-message exchange with x-delay 600; it comes back no
	// earlier than that, with x-delay negated, and succeeds.
	"delayed_retry": func() {
		conn := connect()
		defer conn.Close()
		ch := must(conn.Channel())
		ex, q := name("retry-x"), name("retry-q")
		ok(ch.ExchangeDeclare(ex, "x-delayed-message", false, true, false, false, amqp.Table{"x-delayed-type": "direct"}))
		must(ch.QueueDeclare(q, false, false, true, false, nil))
		ok(ch.QueueBind(q, q, ex, false, nil))
		publish(ch, "", q, []byte("job-1"), false, amqp.Publishing{})
		msgs := must(ch.Consume(q, "", false, false, false, false, nil))
		first := recv(msgs, 5*time.Second, "first attempt")
		failedAt := time.Now()
		publish(ch, ex, q, first.Body, false, amqp.Publishing{Headers: amqp.Table{"x-delay": int32(600)}})
		ok(first.Ack(false))
		second := recv(msgs, 5*time.Second, "retried attempt")
		waited := time.Since(failedAt)
		check(waited >= 550*time.Millisecond, "retried after %v, before its 600 ms delay", waited)
		check(string(second.Body) == "job-1", "retried body %q", second.Body)
		check(second.Headers["x-delay"] == int32(-600), "x-delay on the retry %v (%T)", second.Headers["x-delay"], second.Headers["x-delay"])
		ok(second.Ack(false))
		// A delay in the past routes at once.
		publish(ch, ex, q, []byte("now"), false, amqp.Publishing{Headers: amqp.Table{"x-delay": int32(-5)}})
		d := recv(msgs, 5*time.Second, "negative delay")
		check(string(d.Body) == "now", "negative delay body %q", d.Body)
		ok(d.Ack(false))
		ok(ch.ExchangeDelete(ex, false, false))
	},
}

// pending takes every delivery that arrives until the stream pauses.
// The library hands deliveries over one at a time from its own goroutine,
// so "nothing ready this instant" does not mean "nothing received".
func pending(msgs <-chan amqp.Delivery) []amqp.Delivery {
	var got []amqp.Delivery
	for {
		select {
		case d := <-msgs:
			got = append(got, d)
		case <-time.After(50 * time.Millisecond):
			return got
		}
	}
}

func bodies(ds []amqp.Delivery) string {
	var s []string
	for _, d := range ds {
		s = append(s, string(d.Body))
	}
	return strings.Join(s, ",")
}

func routingKeys(ds []amqp.Delivery) string {
	var s []string
	for _, d := range ds {
		s = append(s, d.RoutingKey)
	}
	return strings.Join(s, ",")
}

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: go-client SCENARIO")
		os.Exit(2)
	}
	fn, found := scenarios[os.Args[1]]
	if !found {
		fmt.Println("n/a: no such scenario for this client")
		os.Exit(exitNA)
	}
	defer func() {
		if r := recover(); r != nil {
			fmt.Fprintln(os.Stderr, "FAIL:", r)
			os.Exit(1)
		}
	}()
	fn()
}
