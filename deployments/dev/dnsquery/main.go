// Command dnsquery asks one DNS server for a name's records and prints their
// values, one a line, like `dig +short @HOST -p PORT NAME TYPE`. The demo uses
// it because dig is in bind9-dnsutils, which the dev stack does not need.
//
//	go run ./deployments/dev/dnsquery 127.0.0.1:5053 app.dev.drorch.test A
package main

import (
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/miekg/dns"
)

func main() {
	if len(os.Args) < 3 || len(os.Args) > 4 {
		fmt.Fprintln(os.Stderr, "usage: dnsquery HOST:PORT NAME [TYPE, default A]")
		os.Exit(2)
	}
	server, name, typ := os.Args[1], dns.Fqdn(os.Args[2]), "A"
	if len(os.Args) == 4 {
		typ = strings.ToUpper(os.Args[3])
	}
	qtype, ok := dns.StringToType[typ]
	if !ok {
		fmt.Fprintf(os.Stderr, "dnsquery: unknown type %q\n", typ)
		os.Exit(2)
	}
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	m.RecursionDesired = false
	c := &dns.Client{Timeout: 5 * time.Second}
	r, _, err := c.Exchange(m, server)
	if err == nil && r.Truncated {
		c.Net = "tcp"
		r, _, err = c.Exchange(m, server)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "dnsquery: %s %s at %s: %v\n", name, typ, server, err)
		os.Exit(1)
	}
	if r.Rcode != dns.RcodeSuccess {
		fmt.Fprintf(os.Stderr, "dnsquery: %s %s at %s: %s\n", name, typ, server, dns.RcodeToString[r.Rcode])
		os.Exit(1)
	}
	for _, rr := range r.Answer {
		if rr.Header().Rrtype != qtype {
			continue
		}
		switch rr := rr.(type) {
		case *dns.A:
			fmt.Println(rr.A)
		case *dns.AAAA:
			fmt.Println(rr.AAAA)
		case *dns.CNAME:
			fmt.Println(rr.Target)
		default:
			fmt.Println(strings.TrimPrefix(rr.String(), rr.Header().String()))
		}
	}
}
