// The checkout page: the card goes to Stripe.js, the payment to our API, the outcome from the
// session's state. Nothing here can charge twice: the server keys every attempt by the session,
// and this script only ever asks it to continue the attempt under way.
(function () {
  'use strict';
  const root = document.getElementById('checkout');
  if (!root) return;

  const id = root.dataset.session;
  const form = document.getElementById('pay-form');
  const payButton = document.getElementById('pay');
  const message = document.getElementById('message');
  const progress = document.getElementById('progress');
  const progressText = document.getElementById('progress-text');
  const outcome = document.getElementById('outcome');
  const outcomeTitle = document.getElementById('outcome-title');
  const outcomeText = document.getElementById('outcome-text');
  const receiptLink = document.getElementById('receipt-link');
  const amountText = document.getElementById('amount').textContent.trim();
  const authenticated = new Set();
  let busy = false;
  let stripe = null;
  let card = null;

  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

  function showMessage(text) {
    message.textContent = text || '';
    message.hidden = !text;
  }

  function setBusy(on, text) {
    busy = on;
    payButton.disabled = on;
    // Nothing to change while a payment is under way.
    for (const input of form.querySelectorAll('input')) input.disabled = on;
    form.setAttribute('aria-busy', on ? 'true' : 'false');
    progress.hidden = !on;
    if (text) progressText.textContent = text;
  }

  async function getJson(path) {
    const response = await fetch(path, { headers: { Accept: 'application/json' }, cache: 'no-store' });
    const body = await response.json().catch(() => ({}));
    return { status: response.status, body };
  }

  function cardName(method) {
    if (!method) return 'your card';
    const brand = method.brand ? method.brand.charAt(0).toUpperCase() + method.brand.slice(1) : 'Card';
    return method.last4 ? `${brand}\u00a0••••\u00a0${method.last4}` : brand;
  }

  // ------------------------------------------------------------------ saved cards

  function selectedMethod() {
    const checked = form.querySelector('input[name="method"]:checked');
    return checked ? checked.value : 'new';
  }

  function updateChoice() {
    document.getElementById('new-card').hidden = selectedMethod() !== 'new';
  }

  async function loadSavedCards() {
    let answer;
    try {
      answer = await getJson(`/checkout/${id}/payment_methods`);
    } catch (err) {
      return;
    }
    const methods = (answer.status === 200 && answer.body.data) || [];
    if (!methods.length) return;
    const list = document.getElementById('saved-list');
    const preferred = methods.find((m) => m.is_default) || methods[0];
    for (const method of methods) {
      const label = document.createElement('label');
      label.className = 'choice';
      const input = document.createElement('input');
      input.type = 'radio';
      input.name = 'method';
      input.value = method.id;
      input.checked = method === preferred;
      const name = document.createElement('span');
      name.className = 'brand-mark';
      name.textContent = cardName(method);
      const exp = document.createElement('span');
      exp.className = 'exp';
      if (method.exp_month && method.exp_year) {
        exp.textContent = `Expires ${String(method.exp_month).padStart(2, '0')}/${String(method.exp_year).slice(-2)}`;
      }
      label.append(input, name, exp);
      list.appendChild(label);
    }
    document.getElementById('saved').hidden = false;
    updateChoice();
  }

  form.addEventListener('change', (event) => {
    if (event.target.name === 'method') updateChoice();
  });

  // ------------------------------------------------------------------ paying

  // One request, sent again after a network error or a 503 (with backoff): the server continues
  // the same attempt, so a retry can never become a second charge.
  async function postPay(paymentMethodId, save) {
    let delay = 1000;
    for (let attempt = 0; ; attempt++) {
      try {
        const response = await fetch(`/api/checkout/sessions/${id}/pay`, {
          method: 'POST',
          headers: { 'Content-Type': 'application/json', Accept: 'application/json' },
          body: JSON.stringify({ payment_method_id: paymentMethodId, save_payment_method: save }),
        });
        const body = await response.json().catch(() => ({}));
        const again = response.status === 503 ||
          (response.status === 409 && body.code === 'idempotency_request_in_progress');
        if (again && attempt < 5) {
          progressText.textContent = 'Still working on it… please keep this page open.';
          const retryAfter = 1000 * (parseInt(response.headers.get('Retry-After') || '0', 10) || 0);
          await sleep(Math.max(retryAfter, delay));
          delay = Math.min(delay * 2, 8000);
          continue;
        }
        return { status: response.status, body };
      } catch (err) {
        if (attempt >= 5) return { status: 0, body: {} };
        await sleep(delay);
        delay = Math.min(delay * 2, 8000);
      }
    }
  }

  function tryAgain(text) {
    setBusy(false);
    showMessage(text);
  }

  async function handleAnswer(status, body) {
    if (status === 201 || status === 200) return followPayment(body);
    if (status === 402) {
      return tryAgain(`${body.title || 'Your card was declined.'} You were not charged. Please try another card.`);
    }
    if (status === 409 && body.code === 'checkout_session_complete') return watch();
    if (status === 409 && body.code === 'checkout_session_expired') {
      window.location.reload();
      return undefined;
    }
    if (status === 404 && body.code === 'payment_method_not_found') {
      return tryAgain('This card cannot be used here. Please use another card.');
    }
    if (status === 0 || status >= 500) {
      return tryAgain('We could not reach the payment service. Press Pay again to continue the same payment: you will not be charged twice.');
    }
    return tryAgain(body.detail || body.title || 'The payment could not be made. Please try another card.');
  }

  async function followPayment(payment) {
    if (payment.status === 'failed' || payment.status === 'canceled') return showFailure(payment);
    return watch(payment);
  }

  // 3-D Secure: Stripe.js finishes the confirmation the server started (never a second confirm
  // from here); what it says is not trusted for the outcome, which is read from the server.
  async function authenticate(payment) {
    authenticated.add(payment.id);
    setBusy(true, 'Waiting for your bank to confirm the payment…');
    try {
      await stripe.handleNextAction({ clientSecret: payment.client_secret });
    } catch (err) {
      // The state below tells what happened.
    }
    progressText.textContent = 'Confirming your payment…';
  }

  // The session's state, polled with backoff until the payment is final.
  async function watch(payment) {
    setBusy(true, 'Confirming your payment…');
    if (payment && payment.status === 'requires_action' && payment.client_secret) {
      await authenticate(payment);
    }
    let delay = 400;
    const deadline = Date.now() + 120000;
    while (Date.now() < deadline) {
      let state = null;
      try {
        const answer = await getJson(`/checkout/${id}/state`);
        if (answer.status === 200) state = answer.body;
      } catch (err) {
        state = null;
      }
      if (state) {
        const latest = state.payment;
        if (state.status === 'complete') return showPaid(state);
        if (state.status === 'expired') {
          window.location.reload();
          return undefined;
        }
        if (latest && (latest.status === 'failed' || latest.status === 'canceled')) {
          return showFailure(latest);
        }
        if (latest && latest.status === 'requires_action' && latest.client_secret &&
            !authenticated.has(latest.id)) {
          await authenticate(latest);
          delay = 400;
          continue;
        }
      }
      await sleep(delay);
      delay = Math.min(Math.round(delay * 1.6), 4000);
    }
    return tryAgain('Your payment is still being processed. You will not be charged twice: reload this page in a minute to see the result.');
  }

  function showFailure(payment) {
    const failure = payment.failure || {};
    let text;
    if (failure.code === 'payment_intent_authentication_failure') {
      text = 'Your bank did not confirm this payment (3-D Secure was not completed). You were not charged. You can try again or use another card.';
    } else if (payment.status === 'canceled') {
      text = 'This payment was canceled. You were not charged. You can try again.';
    } else {
      text = `${failure.message || 'Your card was declined.'} You were not charged. Please try another card.`;
    }
    tryAgain(text);
  }

  async function showPaid(state) {
    setBusy(false);
    form.hidden = true;
    progress.hidden = true;
    outcome.hidden = false;
    outcome.className = 'outcome ok';
    outcomeTitle.textContent = 'Payment received';
    document.getElementById('summary-title').textContent = 'You paid';
    const method = state.payment && state.payment.payment_method;
    outcomeText.textContent = `Thank you. ${amountText} was paid with ${cardName(method)}.`;
    outcome.focus();
    // The receipt is issued a moment after the payment: show its link once it exists.
    let delay = 500;
    for (let i = 0; i < 30 && !state.receipt_url; i++) {
      await sleep(delay);
      delay = Math.min(delay * 1.5, 3000);
      try {
        const answer = await getJson(`/checkout/${id}/state`);
        if (answer.status === 200) state = answer.body;
      } catch (err) {
        // keep trying
      }
    }
    if (state.receipt_url) {
      receiptLink.href = state.receipt_url;
      receiptLink.hidden = false;
    }
  }

  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    if (busy) return; // a second press while paying does nothing
    showMessage('');
    setBusy(true, 'Processing your payment…');
    try {
      let paymentMethodId = selectedMethod();
      let save = false;
      if (paymentMethodId === 'new') {
        const result = await stripe.createPaymentMethod({ type: 'card', card });
        if (result.error) {
          tryAgain(result.error.message || 'Please check your card details.');
          return;
        }
        paymentMethodId = result.paymentMethod.id;
        save = document.getElementById('save-card').checked;
      }
      const answer = await postPay(paymentMethodId, save);
      await handleAnswer(answer.status, answer.body);
    } catch (err) {
      tryAgain('Something went wrong on this page. Reload it to see where your payment stands: you will not be charged twice.');
    }
  });

  // ------------------------------------------------------------------ start

  async function start() {
    if (root.dataset.state === 'complete') {
      const answer = await getJson(`/checkout/${id}/state`);
      if (answer.status === 200) await showPaid(answer.body);
      return;
    }
    if (typeof window.Stripe !== 'function') {
      payButton.disabled = true;
      showMessage('The secure card form could not be loaded. Check your connection and reload the page.');
      return;
    }
    stripe = window.Stripe(root.dataset.key);
    card = stripe.elements().create('card');
    card.mount('#card-element');
    await loadSavedCards();
    // A reload or a second tab while a payment is under way picks it up where it is.
    const answer = await getJson(`/checkout/${id}/state`);
    const latest = answer.status === 200 ? answer.body.payment : null;
    root.dataset.ready = 'true';
    if (answer.status === 200 && answer.body.status === 'complete') {
      await showPaid(answer.body);
    } else if (latest && ['requires_action', 'processing', 'requires_payment_method'].includes(latest.status)) {
      await watch(latest);
    }
  }

  start();
})();
